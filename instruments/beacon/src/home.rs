//! `beacon-home`, the canary outside the segment: answers the probe's
//! hello on TCP, UDP, HTTP and DNS with the HMAC of its nonce, and records
//! every answer it gave with the address it came from.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use outpost_protocol::beacon::Channel;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::{debug, warn};

use crate::proof::{self, Key};

/// How long a TCP or HTTP peer gets to say hello.
const HELLO_WAIT: Duration = Duration::from_secs(5);
/// Largest HTTP request head read.
const HEAD_CAP: usize = 8192;

/// One escape home answered.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Record {
    pub ts: String,
    pub channel: Channel,
    /// Where the hello came from (for DNS: the resolver that asked).
    pub source: SocketAddr,
    pub nonce: String,
}

/// The canary's state: the key, the DNS zone and where records go.
pub struct Home {
    key: Key,
    zone: Option<String>,
    log: Mutex<Option<std::fs::File>>,
}

impl Home {
    /// `log`, if given, gets one JSON line per record (appended).
    pub fn new(key: Key, zone: Option<String>, log: Option<&Path>) -> Result<Arc<Home>, String> {
        let log = match log {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("cannot open the record log {}: {e}", p.display()))?,
            ),
            None => None,
        };
        Ok(Arc::new(Home {
            key,
            zone: zone.map(|z| z.trim_end_matches('.').to_ascii_lowercase()),
            log: Mutex::new(log),
        }))
    }

    fn record(&self, channel: Channel, source: SocketAddr, nonce: &str) {
        let r = Record {
            ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            channel,
            source,
            nonce: nonce.into(),
        };
        let line = serde_json::to_string(&r).expect("a record serializes");
        println!("{line}");
        if let Some(f) = self.log.lock().expect("lock").as_mut()
            && let Err(e) = writeln!(f, "{line}")
        {
            warn!("cannot append to the record log: {e}");
        }
    }

    /// Answers TCP hellos until the listener fails.
    pub async fn serve_tcp(self: Arc<Self>, l: TcpListener) -> std::io::Result<()> {
        self.accept(l, Channel::Tcp).await
    }

    /// Answers HTTP requests that carry a nonce (header `X-Outpost-Nonce`
    /// or query `outpost_nonce`) until the listener fails.
    pub async fn serve_http(self: Arc<Self>, l: TcpListener) -> std::io::Result<()> {
        self.accept(l, Channel::Http).await
    }

    async fn accept(self: Arc<Self>, l: TcpListener, channel: Channel) -> std::io::Result<()> {
        loop {
            let (s, peer) = l.accept().await?;
            let home = self.clone();
            tokio::spawn(async move {
                let r = match channel {
                    Channel::Http => home.http_peer(s, peer).await,
                    _ => home.tcp_peer(s, peer).await,
                };
                if let Err(e) = r {
                    debug!(%peer, "{channel} peer: {e}");
                }
            });
        }
    }

    async fn tcp_peer(&self, mut s: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 256 {
            let n = tokio::time::timeout(HELLO_WAIT, s.read(&mut chunk))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some(nonce) = proof::parse_hello(&text) {
            s.write_all(proof::reply(&self.key, nonce).as_bytes())
                .await?;
            self.record(Channel::Tcp, peer, nonce);
        }
        Ok(())
    }

    /// Answers UDP hellos until the socket fails.
    pub async fn serve_udp(self: Arc<Self>, s: UdpSocket) -> std::io::Result<()> {
        let mut buf = [0u8; 512];
        loop {
            let (n, peer) = s.recv_from(&mut buf).await?;
            let text = String::from_utf8_lossy(&buf[..n]);
            if let Some(nonce) = proof::parse_hello(&text) {
                s.send_to(proof::reply(&self.key, nonce).as_bytes(), peer)
                    .await?;
                self.record(Channel::Udp, peer, nonce);
            }
        }
    }

    async fn http_peer(&self, mut s: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let nonce = loop {
            let n = tokio::time::timeout(HELLO_WAIT, s.read(&mut chunk))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if n == 0 || buf.len() > HEAD_CAP {
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
            Some(n) => ("200 OK", proof::reply(&self.key, n)),
            None => ("404 Not Found", "not a canary request\n".to_string()),
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await?;
        if let Some(n) = nonce {
            self.record(Channel::Http, peer, &n);
        }
        Ok(())
    }

    /// Answers TXT queries for `<nonce>.<zone>` until the socket fails.
    pub async fn serve_dns(self: Arc<Self>, s: UdpSocket) -> std::io::Result<()> {
        let mut buf = [0u8; 1500];
        loop {
            let (n, peer) = s.recv_from(&mut buf).await?;
            if let Some((answer, nonce)) = self.dns_answer(&buf[..n]) {
                s.send_to(&answer, peer).await?;
                if let Some(nonce) = nonce {
                    self.record(Channel::Dns, peer, &nonce);
                }
            }
        }
    }

    /// The answer to one query, and the nonce it proved if it did.
    pub fn dns_answer(&self, query: &[u8]) -> Option<(Vec<u8>, Option<String>)> {
        use simple_dns::rdata::{RData, TXT};
        use simple_dns::{CLASS, Packet, PacketFlag, RCODE, ResourceRecord};
        let q = Packet::parse(query).ok()?;
        if q.has_flags(PacketFlag::RESPONSE) {
            return None;
        }
        let question = q.questions.first()?.clone();
        let name = question.qname.to_string().to_ascii_lowercase();
        let mut reply = Packet::new_reply(q.id());
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        reply.questions.push(question.clone());
        let zone = self.zone.as_deref()?;
        let nonce = name
            .trim_end_matches('.')
            .strip_suffix(zone)
            .and_then(|n| n.strip_suffix('.'))
            .filter(|n| proof::is_nonce(n));
        let proved = match nonce {
            Some(n) => {
                let value = self.key.prove(n);
                let txt = TXT::new()
                    .with_attribute(proof::TXT_KEY, Some(value.as_bytes()))
                    .ok()?;
                reply.answers.push(ResourceRecord::new(
                    question.qname.clone(),
                    CLASS::IN,
                    0,
                    RData::TXT(txt),
                ));
                Some(n.to_string())
            }
            None => {
                *reply.rcode_mut() = if name.ends_with(zone) {
                    RCODE::NameError
                } else {
                    RCODE::Refused
                };
                None
            }
        };
        Some((reply.build_bytes_vec().ok()?, proved))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DnsTarget, ProbeConfig};
    use outpost_protocol::beacon::{Level, Outcome};

    const KEY: &str = "00112233445566778899aabbccddeeff";

    /// Home on loopback, answering on all four channels.
    async fn home(dir: &Path) -> (Arc<Home>, ProbeConfig) {
        let home = Home::new(
            Key::from_hex(KEY).unwrap(),
            Some("canary.test".into()),
            Some(&dir.join("records.jsonl")),
        )
        .unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dns = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let c = ProbeConfig {
            interval: Some("1s".into()),
            key: Some(KEY.into()),
            tcp: vec![tcp.local_addr().unwrap().to_string()],
            udp: vec![udp.local_addr().unwrap().to_string()],
            http: vec![format!("http://{}/canary", http.local_addr().unwrap())],
            dns: vec![DnsTarget {
                name: "canary.test".into(),
                resolvers: vec![dns.local_addr().unwrap().to_string()],
            }],
            ..Default::default()
        };
        tokio::spawn(home.clone().serve_tcp(tcp));
        tokio::spawn(home.clone().serve_http(http));
        tokio::spawn(home.clone().serve_udp(udp));
        tokio::spawn(home.clone().serve_dns(dns));
        (home, c)
    }

    async fn round(c: &ProbeConfig) -> Vec<outpost_protocol::beacon::Attempt> {
        let plan = Arc::new(c.plan().unwrap());
        let mut out = Vec::new();
        crate::probe::round(&plan, |a| out.push(a)).await;
        out
    }

    #[tokio::test]
    async fn every_channel_escapes_to_home_with_proof_and_home_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_home, c) = home(dir.path()).await;
        let out = round(&c).await;
        assert_eq!(out.len(), 4);
        for a in &out {
            assert_eq!(
                (a.outcome, a.evidence.level),
                (Outcome::Escaped, Level::Proven),
                "{a:?}"
            );
        }
        let records = std::fs::read_to_string(dir.path().join("records.jsonl")).unwrap();
        let records: Vec<Record> = records
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 4, "{records:?}");
        assert!(records.iter().all(|r| r.source.ip().is_loopback()));
    }

    #[tokio::test]
    async fn a_probe_with_another_key_is_not_fooled_into_an_escape() {
        let dir = tempfile::tempdir().unwrap();
        let (_home, mut c) = home(dir.path()).await;
        c.key = Some("ffeeddccbbaa99887766554433221100".into());
        for a in round(&c).await {
            assert_eq!(a.outcome, Outcome::Blocked, "{a:?}");
            assert!(a.evidence.detail.contains("does not verify"), "{a:?}");
        }
    }

    #[tokio::test]
    async fn an_http_server_that_is_not_home_is_a_blocked_attempt_with_its_answer() {
        // A "captive portal": answers every request with a redirect.
        let portal = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = portal.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = portal.accept().await.unwrap();
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(b"HTTP/1.1 302 Found\r\nLocation: http://login.portal/\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let c = ProbeConfig {
            key: Some(KEY.into()),
            http: vec![format!("http://{addr}/")],
            ..Default::default()
        };
        let a = round(&c).await.remove(0);
        assert_eq!(a.outcome, Outcome::Blocked);
        assert!(
            a.evidence
                .detail
                .contains("302 Found, Location http://login.portal/"),
            "{a:?}"
        );
    }

    #[test]
    fn dns_answers_only_nonces_under_the_zone() {
        let home = Home::new(
            Key::from_hex(KEY).unwrap(),
            Some("Canary.Test.".into()),
            None,
        )
        .unwrap();
        let n = proof::nonce();
        let q = crate::probe::dns_query(1, &n, "canary.test").unwrap();
        let (a, proved) = home.dns_answer(&q).unwrap();
        assert_eq!(proved.as_deref(), Some(n.as_str()));
        let v = crate::probe::judge_dns(&Key::from_hex(KEY).unwrap(), &n, &a);
        assert_eq!(v.outcome, Outcome::Escaped);
        let q = crate::probe::dns_query(2, &n, "elsewhere.test").unwrap();
        assert_eq!(home.dns_answer(&q).unwrap().1, None);
    }
}
