//! One attempt per channel and target, each ending in an [`Attempt`].
//!
//! Every attempt sends a fresh nonce and counts as `escaped` only when the
//! answer carries the canary's HMAC of it ([`crate::proof`]). Anything
//! else that answers (a captive portal, a firewall's RST, a transparent
//! proxy that does not reach the canary, a TLS-intercepting middlebox) is
//! `blocked`, with what it said as the evidence. ICMP echo has no room for
//! a proof, so a reply there is an escape at the weaker
//! [`Level::Reachable`].
//!
//! - [`sockets`]: TCP, UDP and DNS.
//! - [`icmp`]: ICMP and ICMPv6 echo.
//! - [`web`]: HTTP, HTTPS with a pinned certificate, and both through a
//!   proxy; TCP by `CONNECT` through a proxy.

pub mod icmp;
pub mod sockets;
pub mod web;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use libc::{EACCES, EHOSTUNREACH, ENETUNREACH, ENODEV, EPERM};
use outpost_protocol::beacon::{Attempt, Channel, Evidence, Level, Outcome};
use socket2::SockRef;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::config::{Https, Plan, Proxy};
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
    for (channel, target, job) in jobs(plan) {
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
    }
    while let Some(r) = set.join_next().await {
        if let Ok(a) = r {
            out(a);
        }
    }
}

/// One attempt to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Dns(String, SocketAddr),
    Icmp(IpAddr),
    Http(String),
    Https(Https),
    /// An HTTP canary's URL through a proxy.
    HttpVia(String, Proxy),
    HttpsVia(Https, Proxy),
    Connect(SocketAddr, Proxy),
}

/// Every attempt of one round, with its channel and target: each canary
/// directly, then each HTTP and HTTPS canary through each proxy (channel
/// `http-proxy`) and each TCP canary by `CONNECT` through each proxy
/// (channel `connect`); a proxied target names the proxy ("… via
/// http://10.0.0.8:3128").
pub fn jobs(plan: &Plan) -> Vec<(Channel, String, Job)> {
    let mut v = Vec::with_capacity(plan.attempts());
    for a in &plan.tcp {
        v.push((Channel::Tcp, a.to_string(), Job::Tcp(*a)));
    }
    for a in &plan.udp {
        v.push((Channel::Udp, a.to_string(), Job::Udp(*a)));
    }
    for (name, r) in &plan.dns {
        v.push((
            Channel::Dns,
            format!("{name}@{r}"),
            Job::Dns(name.clone(), *r),
        ));
    }
    for a in &plan.icmp {
        v.push((Channel::Icmp, a.to_string(), Job::Icmp(*a)));
    }
    for (url, _) in &plan.http {
        v.push((Channel::Http, url.clone(), Job::Http(url.clone())));
    }
    for h in &plan.https {
        v.push((Channel::Https, h.url.clone(), Job::Https(h.clone())));
    }
    for p in &plan.proxies {
        let via = |t: &str| format!("{t} via {}", p.name);
        for (url, _) in &plan.http {
            v.push((
                Channel::HttpProxy,
                via(url),
                Job::HttpVia(url.clone(), p.clone()),
            ));
        }
        for h in &plan.https {
            v.push((
                Channel::HttpProxy,
                via(&h.url),
                Job::HttpsVia(h.clone(), p.clone()),
            ));
        }
        for a in &plan.tcp {
            v.push((
                Channel::Connect,
                via(&a.to_string()),
                Job::Connect(*a, p.clone()),
            ));
        }
    }
    v
}

async fn run(plan: &Plan, job: Job) -> Verdict {
    let nonce = proof::nonce();
    let dev = plan.interface.as_deref();
    let key = &plan.key;
    let r = match job {
        Job::Tcp(a) => sockets::tcp(dev, a, &nonce, key).await,
        Job::Udp(a) => sockets::udp(dev, a, &nonce, key).await,
        Job::Dns(name, r) => sockets::dns(dev, &name, r, &nonce, key).await,
        Job::Icmp(a) => {
            let dev = dev.map(str::to_owned);
            let t = plan.timeout;
            tokio::task::spawn_blocking(move || icmp::echo(dev.as_deref(), a, &nonce, t))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)))
        }
        Job::Http(url) => web::http(plan, &url, None, &nonce).await,
        Job::HttpVia(url, p) => web::http(plan, &url, Some(&p), &nonce).await,
        Job::Https(h) => web::https(dev, &h, None, &nonce, key).await,
        Job::HttpsVia(h, p) => web::https(dev, &h, Some(&p), &nonce, key).await,
        Job::Connect(a, p) => web::connect(dev, a, &p, &nonce, key).await,
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
        (
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof,
            _,
        ) => Verdict::blocked(format!(
            "the connection was cut before an answer ({e}): a firewall or proxy reset or closed it"
        )),
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

pub(crate) fn bind_dev(s: SockRef<'_>, dev: Option<&str>) -> io::Result<()> {
    match dev {
        Some(d) => s.bind_device(Some(d.as_bytes())),
        None => Ok(()),
    }
}

/// The I/O error under a client's error, so it is classified like the
/// other channels'.
pub(crate) fn io_cause(e: reqwest::Error) -> io::Error {
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
        use libc::{ECONNABORTED, ECONNREFUSED, ECONNRESET, ETIMEDOUT};
        let table = [
            (ECONNREFUSED, Outcome::Blocked, "refused"),
            (ETIMEDOUT, Outcome::Blocked, "timed out"),
            (ECONNRESET, Outcome::Blocked, "cut before an answer"),
            (ECONNABORTED, Outcome::Blocked, "cut before an answer"),
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
}
