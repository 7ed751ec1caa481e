//! One attempt per channel and target, each ending in an [`Attempt`].
//!
//! Every attempt sends a fresh nonce and counts as `escaped` only when the
//! answer carries the canary's HMAC of it ([`crate::proof`]). Anything
//! else that answers (a captive portal, a firewall's RST, a transparent
//! proxy that does not reach the canary) is `blocked`, with what it said
//! as the evidence. ICMP echo has no room for a proof, so a reply there is
//! an escape at the weaker [`Level::Reachable`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use libc::{EACCES, EHOSTUNREACH, ENETUNREACH, ENODEV, EPERM};
use outpost_protocol::beacon::{Attempt, Channel, Evidence, Level, Outcome};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::config::Plan;
use crate::proof::{self, Key};

/// Most bytes read from an answer.
const ANSWER_CAP: usize = 4096;

/// What an attempt came to, before it is stamped with time and target.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub level: Level,
    pub detail: String,
}

impl Verdict {
    fn escaped(level: Level, detail: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::Escaped,
            level,
            detail: detail.into(),
        }
    }
    fn blocked(detail: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::Blocked,
            level: Level::None,
            detail: detail.into(),
        }
    }
    fn error(detail: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::Error,
            level: Level::None,
            detail: detail.into(),
        }
    }
}

/// Runs one round: every target of `plan` at once; `out` gets each
/// attempt as it ends.
pub async fn round(plan: &Arc<Plan>, mut out: impl FnMut(Attempt)) {
    let mut set = JoinSet::new();
    let mut go = |channel: Channel, target: String, job: Job| {
        let plan = plan.clone();
        set.spawn(async move {
            let ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            let t0 = Instant::now();
            let v = match timeout(plan.timeout, run(&plan, job)).await {
                Ok(v) => v,
                Err(_) => Verdict::blocked(format!(
                    "no answer within the {} timeout",
                    humantime::format_duration(plan.timeout)
                )),
            };
            Attempt {
                ts,
                channel,
                target,
                outcome: v.outcome,
                latency_ms: (t0.elapsed().as_secs_f64() * 1e6).round() / 1e3,
                evidence: Evidence {
                    level: v.level,
                    detail: v.detail,
                },
            }
        });
    };
    for a in &plan.tcp {
        go(Channel::Tcp, a.to_string(), Job::Tcp(*a));
    }
    for a in &plan.udp {
        go(Channel::Udp, a.to_string(), Job::Udp(*a));
    }
    for (name, r) in &plan.dns {
        go(
            Channel::Dns,
            format!("{name}@{r}"),
            Job::Dns(name.clone(), *r),
        );
    }
    for a in &plan.icmp {
        go(Channel::Icmp, a.to_string(), Job::Icmp(*a));
    }
    for (url, _) in &plan.http {
        go(Channel::Http, url.clone(), Job::Http(url.clone()));
    }
    while let Some(r) = set.join_next().await {
        if let Ok(a) = r {
            out(a);
        }
    }
}

enum Job {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Dns(String, SocketAddr),
    Icmp(Ipv4Addr),
    Http(String),
}

async fn run(plan: &Plan, job: Job) -> Verdict {
    let nonce = proof::nonce();
    let dev = plan.interface.as_deref();
    let r = match job {
        Job::Tcp(a) => tcp(dev, a, &nonce, &plan.key).await,
        Job::Udp(a) => udp(dev, a, &nonce, &plan.key).await,
        Job::Dns(name, r) => dns(dev, &name, r, &nonce, &plan.key).await,
        Job::Icmp(a) => {
            let dev = dev.map(str::to_owned);
            let t = plan.timeout;
            tokio::task::spawn_blocking(move || icmp(dev.as_deref(), a, &nonce, t))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)))
        }
        Job::Http(url) => http(plan, &url, &nonce).await,
    };
    r.unwrap_or_else(|e| classify(&e, dev))
}

/// Sorts a socket error into blocked (the network said no) or error (the
/// probe could not try).
pub fn classify(e: &io::Error, dev: Option<&str>) -> Verdict {
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::ConnectionRefused, _) => {
            Verdict::blocked("refused (a TCP RST or an ICMP port unreachable answered)")
        }
        (io::ErrorKind::TimedOut, _) => Verdict::blocked("no answer (timed out)"),
        (_, Some(ENETUNREACH)) => {
            Verdict::blocked("network unreachable: no route out of the segment")
        }
        (_, Some(EHOSTUNREACH)) => {
            Verdict::blocked("host unreachable (ICMP host unreachable or no ARP answer)")
        }
        (_, Some(ENODEV)) => Verdict::error(format!(
            "interface {} does not exist",
            dev.unwrap_or("(none)")
        )),
        (_, Some(EPERM | EACCES)) => Verdict::error(format!(
            "not permitted ({e}); ICMP needs the net_raw capability"
        )),
        _ => Verdict::error(e.to_string()),
    }
}

/// Judges what came back from a canary address.
pub fn judge(key: &Key, nonce: &str, answer: &[u8], what: &str) -> Verdict {
    let text = String::from_utf8_lossy(answer);
    match proof::find_reply(&text) {
        Some(p) if key.verify(nonce, p) => Verdict::escaped(
            Level::Proven,
            format!(
                "{what}: the canary's HMAC of nonce {} verified",
                &nonce[..8]
            ),
        ),
        Some(_) => Verdict::blocked(format!(
            "{what}: an answer in the canary's format whose HMAC does not verify (an impostor, or home runs with another key)"
        )),
        None if answer.is_empty() => Verdict::blocked(format!(
            "{what}: no answer (a proxy or firewall that accepts and stays silent?)"
        )),
        None => Verdict::blocked(format!(
            "{what}: answered without the canary's proof: {} (a captive portal or a proxy that does not reach the canary?)",
            proof::excerpt(answer)
        )),
    }
}

fn bind_dev(s: SockRef<'_>, dev: Option<&str>) -> io::Result<()> {
    match dev {
        Some(d) => s.bind_device(Some(d.as_bytes())),
        None => Ok(()),
    }
}

async fn tcp(dev: Option<&str>, a: SocketAddr, nonce: &str, key: &Key) -> io::Result<Verdict> {
    let sock = if a.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    bind_dev(SockRef::from(&sock), dev)?;
    let mut s = sock.connect(a).await?;
    s.write_all(proof::hello(nonce).as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    // Until a line, the end, or the round's timeout (which the caller
    // holds; what was read so far is lost then, which is fine: no proof).
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(Verdict::blocked(format!(
                    "connected, then reset after {} bytes (a firewall or proxy cut it)",
                    buf.len()
                )));
            }
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.contains(&b'\n') || buf.len() >= ANSWER_CAP {
            break;
        }
    }
    Ok(judge(key, nonce, &buf, "tcp"))
}

async fn udp(dev: Option<&str>, a: SocketAddr, nonce: &str, key: &Key) -> io::Result<Verdict> {
    let s = connected_udp(dev, a).await?;
    s.send(proof::hello(nonce).as_bytes()).await?;
    let mut buf = vec![0u8; ANSWER_CAP];
    let n = s.recv(&mut buf).await?;
    Ok(judge(key, nonce, &buf[..n], "udp"))
}

async fn connected_udp(dev: Option<&str>, a: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = if a.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any).await?;
    bind_dev(SockRef::from(&s), dev)?;
    s.connect(a).await?;
    Ok(s)
}

/// A TXT query for `<nonce>.<zone>`.
pub fn dns_query(id: u16, nonce: &str, zone: &str) -> io::Result<Vec<u8>> {
    use simple_dns::{CLASS, Name, Packet, PacketFlag, Question, TYPE};
    let qname = format!("{nonce}.{zone}");
    let mut p = Packet::new_query(id);
    p.set_flags(PacketFlag::RECURSION_DESIRED);
    p.questions.push(Question::new(
        Name::new(&qname).map_err(io::Error::other)?,
        TYPE::TXT.into(),
        CLASS::IN.into(),
        false,
    ));
    p.build_bytes_vec().map_err(io::Error::other)
}

/// Judges a DNS answer to [`dns_query`].
pub fn judge_dns(key: &Key, nonce: &str, answer: &[u8]) -> Verdict {
    use simple_dns::{Packet, rdata::RData};
    let p = match Packet::parse(answer) {
        Ok(p) => p,
        Err(e) => {
            return Verdict::blocked(format!(
                "dns: an answer that is not DNS ({e}): {}",
                proof::excerpt(answer)
            ));
        }
    };
    let found = p.answers.iter().find_map(|rr| match &rr.rdata {
        RData::TXT(t) => t.attributes().remove(proof::TXT_KEY).flatten(),
        _ => None,
    });
    match found {
        Some(v) => judge(
            key,
            nonce,
            format!("{} {v}", proof::REPLY).as_bytes(),
            "dns",
        ),
        None => Verdict::blocked(format!(
            "dns: the resolver answered {:?} with {} records and no canary proof",
            p.rcode(),
            p.answers.len()
        )),
    }
}

async fn dns(
    dev: Option<&str>,
    zone: &str,
    resolver: SocketAddr,
    nonce: &str,
    key: &Key,
) -> io::Result<Verdict> {
    let s = connected_udp(dev, resolver).await?;
    let id: u16 = rand::random();
    s.send(&dns_query(id, nonce, zone)?).await?;
    let mut buf = vec![0u8; ANSWER_CAP];
    loop {
        let n = s.recv(&mut buf).await?;
        // An answer to another query (a late one) is not ours.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return Ok(judge_dns(key, nonce, &buf[..n]));
        }
    }
}

/// The internet checksum of `b`.
fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request carrying `payload`.
pub fn echo_request(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Judges one IPv4 packet a raw ICMP socket read; `None` if it is not
/// about our echo request.
pub fn judge_icmp(
    pkt: &[u8],
    target: Ipv4Addr,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Option<Verdict> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    if pkt.len() < ihl + 8 || ihl < 20 {
        return None;
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let icmp = &pkt[ihl..];
    let ours = |h: &[u8]| {
        h.len() >= 8 && h[0] == 8 && h[4..6] == id.to_be_bytes() && h[6..8] == seq.to_be_bytes()
    };
    match icmp[0] {
        0 if src == target && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes() => {
            if &icmp[8..] == payload {
                Some(Verdict::escaped(
                    Level::Reachable,
                    format!(
                        "icmp: echo reply from {src} with our nonce; the canary's address is reachable (ICMP cannot prove it is the canary)"
                    ),
                ))
            } else {
                Some(Verdict::blocked(format!(
                    "icmp: an echo reply from {src} that does not carry our nonce"
                )))
            }
        }
        3 | 11 => {
            // The original header and 8 bytes of our request follow.
            let inner = icmp.get(8..)?;
            let iihl = usize::from(*inner.first()? & 0x0f) * 4;
            if !ours(inner.get(iihl..)?) {
                return None;
            }
            let what = if icmp[0] == 3 {
                format!("destination unreachable (code {})", icmp[1])
            } else {
                "time exceeded".to_string()
            };
            Some(Verdict::blocked(format!("icmp: {what} from {src}")))
        }
        _ => None,
    }
}

fn icmp(dev: Option<&str>, target: Ipv4Addr, nonce: &str, limit: Duration) -> io::Result<Verdict> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    if let Some(d) = dev {
        s.bind_device(Some(d.as_bytes()))?;
    }
    let (id, seq): (u16, u16) = (rand::random(), rand::random());
    let req = echo_request(id, seq, nonce.as_bytes());
    s.send_to(&req, &SocketAddr::new(IpAddr::V4(target), 0).into())?;
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Verdict::blocked(format!(
                "icmp: no echo reply from {target} within {}",
                humantime::format_duration(limit)
            )));
        }
        s.set_read_timeout(Some(left))?;
        let n = match std::io::Read::read(&mut &s, &mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(v) = judge_icmp(&buf[..n], target, id, seq, nonce.as_bytes()) {
            return Ok(v);
        }
    }
}

async fn http(plan: &Plan, url: &str, nonce: &str) -> io::Result<Verdict> {
    // A client per attempt, on purpose: a kept-alive connection from a
    // past round could outlive a firewall that now blocks new ones.
    // No proxy from the environment: a stray `http_proxy` must not stop
    // the direct path from being tried.
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(plan.timeout);
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
    Ok(judge(
        &plan.key,
        nonce,
        &body,
        &format!("http {status}{location}"),
    ))
}

/// The I/O error under a reqwest error, so it is classified like the
/// other channels'.
fn io_cause(e: reqwest::Error) -> io::Error {
    let timeout = e.is_timeout();
    io_under(&e).unwrap_or_else(|| {
        if timeout {
            io::Error::new(io::ErrorKind::TimedOut, e.to_string())
        } else {
            io::Error::other(e.to_string())
        }
    })
}

/// The first I/O error in `e`'s chain of sources, with its OS error number
/// kept (what [`classify`] goes by: "network unreachable" is `blocked`
/// only because the errno says so).
fn io_under(e: &(dyn std::error::Error + 'static)) -> Option<io::Error> {
    let mut src = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return Some(match io.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(io.kind(), io.to_string()),
            });
        }
        src = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_hex("00112233445566778899aabbccddeeff").unwrap()
    }

    #[test]
    fn only_the_canarys_proof_is_an_escape() {
        let n = proof::nonce();
        let v = judge(&key(), &n, proof::reply(&key(), &n).as_bytes(), "tcp");
        assert_eq!((v.outcome, v.level), (Outcome::Escaped, Level::Proven));
        let portal = judge(
            &key(),
            &n,
            b"HTTP/1.1 302 Found\r\nLocation: http://login/\r\n",
            "tcp",
        );
        assert_eq!(portal.outcome, Outcome::Blocked);
        assert!(portal.detail.contains("302 Found"), "{}", portal.detail);
        let other = Key::from_hex("ffeeddccbbaa99887766554433221100").unwrap();
        let impostor = judge(&key(), &n, proof::reply(&other, &n).as_bytes(), "udp");
        assert_eq!(impostor.outcome, Outcome::Blocked);
        assert!(impostor.detail.contains("does not verify"));
        assert_eq!(judge(&key(), &n, b"", "tcp").outcome, Outcome::Blocked);
    }

    /// An error the way a library wraps it (as hyper does under reqwest):
    /// the OS error is a source some levels down.
    #[derive(Debug)]
    struct Wrapped(
        &'static str,
        Option<Box<dyn std::error::Error + Send + Sync>>,
    );
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn every_channel_classifies_the_same_errno_the_same_way() {
        use libc::{ECONNREFUSED, ETIMEDOUT};
        let table = [
            (ECONNREFUSED, Outcome::Blocked, "refused"),
            (ETIMEDOUT, Outcome::Blocked, "timed out"),
            (ENETUNREACH, Outcome::Blocked, "network unreachable"),
            (EHOSTUNREACH, Outcome::Blocked, "host unreachable"),
            (ENODEV, Outcome::Error, "does not exist"),
            (EPERM, Outcome::Error, "not permitted"),
            (EACCES, Outcome::Error, "not permitted"),
        ];
        for (errno, outcome, says) in table {
            // TCP, UDP, DNS and ICMP get the socket's error as it is.
            let direct = classify(&io::Error::from_raw_os_error(errno), Some("seg0"));
            // HTTP gets it wrapped in the client's errors.
            let wrapped = Wrapped(
                "client error (Connect)",
                Some(Box::new(Wrapped(
                    "tcp connect error",
                    Some(Box::new(io::Error::from_raw_os_error(errno))),
                ))),
            );
            let through_http = classify(&io_under(&wrapped).unwrap(), Some("seg0"));
            for (channel, v) in [("socket", &direct), ("http", &through_http)] {
                assert_eq!(
                    v.outcome, outcome,
                    "errno {errno} on {channel}: {}",
                    v.detail
                );
                assert!(
                    v.detail.contains(says),
                    "errno {errno} on {channel}: {}",
                    v.detail
                );
            }
        }
        assert!(io_under(&Wrapped("no io inside", None)).is_none());
    }

    #[test]
    fn refusals_and_missing_routes_are_blocked_but_local_faults_are_errors() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify(&refused, None).outcome, Outcome::Blocked);
        let unreach = io::Error::from_raw_os_error(ENETUNREACH);
        assert_eq!(classify(&unreach, None).outcome, Outcome::Blocked);
        let nodev = classify(&io::Error::from_raw_os_error(ENODEV), Some("seg0"));
        assert_eq!(nodev.outcome, Outcome::Error);
        assert!(nodev.detail.contains("seg0"));
    }

    #[test]
    fn a_dns_answer_with_the_txt_proof_is_an_escape_and_nxdomain_is_not() {
        use simple_dns::{
            CLASS, Name, Packet, RCODE, ResourceRecord,
            rdata::{RData, TXT},
        };
        let n = proof::nonce();
        let q = dns_query(7, &n, "canary.example").unwrap();
        let parsed = Packet::parse(&q).unwrap();
        let mut reply = parsed.clone().into_reply();
        let value = key().prove(&n);
        let txt = TXT::new()
            .with_attribute(proof::TXT_KEY, Some(value.as_bytes()))
            .unwrap();
        let qname = format!("{n}.canary.example");
        reply.answers.push(ResourceRecord::new(
            Name::new(&qname).unwrap(),
            CLASS::IN,
            0,
            RData::TXT(txt),
        ));
        let v = judge_dns(&key(), &n, &reply.build_bytes_vec().unwrap());
        assert_eq!(
            (v.outcome, v.level),
            (Outcome::Escaped, Level::Proven),
            "{v:?}"
        );
        let mut nx = parsed.into_reply();
        *nx.rcode_mut() = RCODE::NameError;
        let v = judge_dns(&key(), &n, &nx.build_bytes_vec().unwrap());
        assert_eq!(v.outcome, Outcome::Blocked);
        assert!(v.detail.contains("NameError"), "{}", v.detail);
    }

    #[test]
    fn echo_replies_are_matched_by_id_sequence_source_and_nonce() {
        let target = Ipv4Addr::new(10, 80, 0, 2);
        let req = echo_request(0x1234, 7, b"nonce");
        assert_eq!(checksum(&req), 0, "a packet with its checksum sums to zero");
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 80, 0, 2, 10, 79, 0, 2,
        ];
        let mut reply = req.clone();
        reply[0] = 0;
        ip.extend_from_slice(&reply);
        let v = judge_icmp(&ip, target, 0x1234, 7, b"nonce").unwrap();
        assert_eq!((v.outcome, v.level), (Outcome::Escaped, Level::Reachable));
        assert!(
            judge_icmp(&ip, target, 0x9999, 7, b"nonce").is_none(),
            "another prober's reply"
        );
        assert!(judge_icmp(&ip, Ipv4Addr::new(10, 80, 0, 3), 0x1234, 7, b"nonce").is_none());
        // A router's unreachable, quoting our request.
        let mut unreach = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 79, 0, 1, 10, 79, 0, 2,
        ];
        unreach.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
        unreach.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 79, 0, 2, 10, 80, 0, 2,
        ]);
        unreach.extend_from_slice(&req[..8]);
        let v = judge_icmp(&unreach, target, 0x1234, 7, b"nonce").unwrap();
        assert_eq!(v.outcome, Outcome::Blocked);
        assert!(
            v.detail.contains("unreachable (code 1) from 10.79.0.1"),
            "{}",
            v.detail
        );
        assert!(judge_icmp(&[0x45], target, 1, 1, b"").is_none());
    }
}
