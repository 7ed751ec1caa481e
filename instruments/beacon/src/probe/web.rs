//! HTTP and HTTPS canaries, directly and through configured proxies, and
//! TCP canaries by HTTP `CONNECT` through a proxy.
//!
//! No proxy ever comes from the environment: a stray `http_proxy` must
//! not stop the direct path from being tried. Proxies are listed in the
//! settings, and each is an attempt of its own (`http-proxy`, `connect`),
//! so a direct path and a proxy path are reported apart.
//!
//! HTTPS pins home's certificate by its sha256 instead of trusting a CA:
//! a TLS-intercepting middlebox presents another certificate and the
//! attempt is `blocked` with both fingerprints named, even if the
//! middlebox relays home's proof (it did not let the probe reach home
//! unseen; it is the middlebox that escaped).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use outpost_protocol::pin::PinVerifier;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::sockets::{connect_tcp, hello_exchange};
use super::{ANSWER_CAP, Verdict, io_cause, judge};
use crate::config::{Https, Plan, Proxy, show_pin};
use crate::proof::Key;

/// Largest proxy answer head read.
const PROXY_HEAD_CAP: usize = 8192;

/// One HTTP canary, directly or through `via`.
pub(crate) async fn http(
    plan: &Plan,
    url: &str,
    via: Option<&Proxy>,
    nonce: &str,
) -> io::Result<Verdict> {
    // A client per attempt, on purpose: a kept-alive connection from a
    // past round could outlive a firewall that now blocks new ones.
    outpost_protocol::pin::use_ring_provider();
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(plan.timeout);
    b = match via {
        // A proxy given here replaces any from the environment.
        Some(p) => b.proxy(reqwest::Proxy::http(&p.url).map_err(io::Error::other)?),
        None => b.no_proxy(),
    };
    if let Some(d) = &plan.interface {
        b = b.interface(d);
    }
    let client = b.build().map_err(io::Error::other)?;
    let mut u = reqwest::Url::parse(url).map_err(io::Error::other)?;
    u.query_pairs_mut().append_pair("outpost_nonce", nonce);
    let mut resp = match client.get(u).header("X-Outpost-Nonce", nonce).send().await {
        Ok(r) => r,
        Err(e) => return Err(io_cause(e)),
    };
    let status = resp.status();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|l| format!(", Location {}", String::from_utf8_lossy(l.as_bytes())))
        .unwrap_or_default();
    let mut body = Vec::new();
    while body.len() < ANSWER_CAP {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) => return Err(io_cause(e)),
        }
    }
    let via = via.map(|p| format!(" via {}", p.name)).unwrap_or_default();
    Ok(judge(
        &plan.key,
        nonce,
        &body,
        &format!("http {status}{location}{via}"),
    ))
}

/// A tunnel through proxy `p` to `to`: the stream once the proxy said
/// 2xx to `CONNECT`, or the verdict when it said anything else.
pub(crate) async fn tunnel(
    dev: Option<&str>,
    p: &Proxy,
    to: SocketAddr,
) -> io::Result<Result<TcpStream, Verdict>> {
    let mut s = connect_tcp(dev, p.addr).await?;
    let mut req = format!("CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n");
    if let Some(a) = &p.authorization {
        req.push_str(&format!("Proxy-Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    // Byte by byte up to the blank line: what follows it is the tunnel's,
    // and must not be read here.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= PROXY_HEAD_CAP {
            return Ok(Err(Verdict::blocked(format!(
                "proxy {} answered CONNECT with a head longer than {PROXY_HEAD_CAP} bytes",
                p.name
            ))));
        }
        if s.read(&mut byte).await? == 0 {
            return Ok(Err(Verdict::blocked(format!(
                "proxy {} closed the connection after {} bytes of its CONNECT answer{}",
                p.name,
                head.len(),
                if head.is_empty() {
                    String::new()
                } else {
                    format!(": {}", crate::proof::excerpt(&head))
                }
            ))));
        }
        head.push(byte[0]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Ok(Err(Verdict::blocked(format!(
                "proxy {} answered CONNECT with something that is not HTTP: {}",
                p.name,
                crate::proof::excerpt(&head)
            ))));
        }
    }
    let code = resp.code.unwrap_or(0);
    if (200..300).contains(&code) {
        Ok(Ok(s))
    } else {
        Ok(Err(Verdict::blocked(format!(
            "proxy {} refused CONNECT to {to}: {code} {}",
            p.name,
            resp.reason.unwrap_or("")
        ))))
    }
}

/// A TCP canary through a `CONNECT` tunnel.
pub(crate) async fn connect(
    dev: Option<&str>,
    to: SocketAddr,
    p: &Proxy,
    nonce: &str,
    key: &Key,
) -> io::Result<Verdict> {
    match tunnel(dev, p, to).await? {
        Ok(s) => hello_exchange(s, nonce, key, &format!("connect via {}", p.name)).await,
        Err(v) => Ok(v),
    }
}

/// One HTTPS canary, directly or through a `CONNECT` tunnel.
pub(crate) async fn https(
    dev: Option<&str>,
    h: &Https,
    via: Option<&Proxy>,
    nonce: &str,
    key: &Key,
) -> io::Result<Verdict> {
    let tcp = match via {
        Some(p) => match tunnel(dev, p, h.addr).await? {
            Ok(s) => s,
            Err(v) => return Ok(v),
        },
        None => connect_tcp(dev, h.addr).await?,
    };
    let pin = Arc::new(PinVerifier::new(h.pin));
    let config = rustls::ClientConfig::builder_with_provider(pin.provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(pin.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let via_text = via.map(|p| format!(" via {}", p.name)).unwrap_or_default();
    let tls = match connector
        .connect(ServerName::IpAddress(h.addr.ip().into()), tcp)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            if let Some(seen) = pin.mismatch() {
                return Ok(Verdict::blocked(format!(
                    "https{via_text}: the certificate presented ({seen}) does not match the \
                     pin ({}): a TLS-intercepting middlebox, or home has a new certificate",
                    show_pin(&h.pin)
                )));
            }
            if e.raw_os_error().is_some() || e.kind() != io::ErrorKind::InvalidData {
                return Err(e);
            }
            return Ok(Verdict::blocked(format!(
                "https{via_text}: the TLS handshake failed ({e})"
            )));
        }
    };
    let (status, body) = get(tls, h, nonce).await?;
    Ok(judge(
        key,
        nonce,
        &body,
        &format!("https {status}{via_text}"),
    ))
}

/// A GET of the canary's path with the nonce over an open stream; the
/// status line and up to [`ANSWER_CAP`] bytes of body.
async fn get(
    mut s: impl AsyncRead + AsyncWrite + Unpin,
    h: &Https,
    nonce: &str,
) -> io::Result<(String, Vec<u8>)> {
    let sep = if h.path.contains('?') { '&' } else { '?' };
    let req = format!(
        "GET {}{sep}outpost_nonce={nonce} HTTP/1.1\r\nHost: {}\r\nX-Outpost-Nonce: {nonce}\r\n\
         User-Agent: escape-probe\r\nConnection: close\r\n\r\n",
        h.path, h.host
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            // A peer that closes without TLS's close_notify: what came is
            // still judged (a truncation cannot forge the HMAC).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !buf.is_empty() => 0,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.len() >= ANSWER_CAP + PROXY_HEAD_CAP || complete(&buf) {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf) {
        Ok(httparse::Status::Complete(at)) => Ok((
            format!("{} {}", resp.code.unwrap_or(0), resp.reason.unwrap_or("")),
            buf[at..].iter().copied().take(ANSWER_CAP).collect(),
        )),
        _ => Ok(("(not HTTP)".to_string(), buf)),
    }
}

/// Whether `buf` holds a whole response with a `Content-Length` body.
fn complete(buf: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(at)) = resp.parse(buf) else {
        return false;
    };
    resp.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .is_some_and(|len| buf.len() - at >= len)
}
