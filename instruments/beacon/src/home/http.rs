//! Home's HTTP and HTTPS answers.

use std::net::SocketAddr;
use std::time::Duration;

use outpost_protocol::beacon::Channel;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{HEAD_CAP, HELLO_WAIT, Home, Tally};
use crate::proof;

impl Home {
    /// Answers one HTTP request (over TLS for `https`) that carries a
    /// nonce; anything else gets a 404, an oversized head a 431.
    pub(super) async fn http_peer(
        &self,
        mut s: impl AsyncRead + AsyncWrite + Unpin,
        peer: SocketAddr,
        channel: Channel,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let nonce = loop {
            let n = tokio::time::timeout(HELLO_WAIT, s.read(&mut chunk))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if n == 0 {
                return Ok(());
            }
            if buf.len() + n > HEAD_CAP {
                self.bump(channel, Tally::Refused);
                let _ = s
                    .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                // Closing with unread data would reset the connection and
                // lose the answer: say we are done, then read what is
                // still coming for a moment (bounded) before closing.
                let _ = s.shutdown().await;
                let mut sink = [0u8; 4096];
                let mut drained = 0;
                while drained < 64 * 1024 {
                    match tokio::time::timeout(Duration::from_secs(1), s.read(&mut sink)).await {
                        Ok(Ok(n)) if n > 0 => drained += n,
                        _ => break,
                    }
                }
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(_)) => break http_nonce(&req),
                Ok(httparse::Status::Partial) => continue,
                Err(_) => break None,
            }
        };
        let (status, body) = match &nonce {
            Some(n) => {
                self.bump(channel, Tally::Hello);
                ("200 OK", proof::reply(&self.key, n))
            }
            None => {
                self.bump(channel, Tally::Refused);
                ("404 Not Found", "not a canary request\n".to_string())
            }
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await?;
        // For TLS, the close_notify: the probe knows the answer is whole.
        let _ = s.shutdown().await;
        if let Some(n) = nonce {
            self.record(channel, peer, &n);
        }
        Ok(())
    }
}

/// The nonce an HTTP request carries.
fn http_nonce(req: &httparse::Request<'_, '_>) -> Option<String> {
    let from_header = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-outpost-nonce"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    let from_query = req.path.and_then(|p| {
        let q = p.split_once('?')?.1;
        q.split('&')
            .find_map(|kv| kv.strip_prefix("outpost_nonce="))
            .map(str::to_owned)
    });
    from_header
        .into_iter()
        .chain(from_query)
        .find(|n| proof::is_nonce(n))
}
