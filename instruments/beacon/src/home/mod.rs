//! `beacon-home`, the canary outside the segment: answers the probe's
//! hello on TCP, UDP, HTTP, HTTPS and DNS with the HMAC of its nonce, and
//! records every answer it gave with the address it came from.
//!
//! - [`http`]: HTTP and HTTPS requests; [`dns`]: TXT queries;
//!   [`tls`]: the HTTPS certificate and its pin.
//!
//! Home never stops serving because of what one peer did: a reply it
//! cannot send, garbage, a stalled or oversized request is counted per
//! channel ([`Home::stats`]) and logged at most ten lines a minute. What a
//! hostile peer can cost it is bounded: at most
//! [`DEFAULT_MAX_CONNECTIONS`] TCP and HTTP connections at once and
//! [`DEFAULT_MAX_PER_SOURCE`] from one address, 5 s per read and 10 s per
//! connection, 256 bytes of TCP hello and 8 KiB of HTTP head.

mod dns;
mod http;
#[cfg(test)]
mod tests;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use outpost_protocol::beacon::Channel;
use outpost_protocol::ratelimit::RateLimited;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::warn;

use crate::proof::{self, Key};

/// How long a TCP or HTTP peer gets for each read of its hello.
const HELLO_WAIT: Duration = Duration::from_secs(5);
/// How long one TCP or HTTP connection may last in all.
const CONN_DEADLINE: Duration = Duration::from_secs(10);
/// Largest HTTP request head read.
const HEAD_CAP: usize = 8192;
/// Largest TCP hello read.
const HELLO_CAP: usize = 256;
/// TCP and HTTP connections home serves at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Of those, how many one source address may hold: a flood from one peer
/// cannot crowd out a probe's hello from another.
pub const DEFAULT_MAX_PER_SOURCE: usize = 32;
/// Errors in a row after which a listener is taken as broken (and
/// re-bound by the binary); any success resets the count.
const BROKEN_AFTER: u32 = 100;

/// One escape home answered.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Record {
    pub ts: String,
    pub channel: Channel,
    /// Where the hello came from (for DNS: the resolver that asked).
    pub source: SocketAddr,
    pub nonce: String,
}

/// What home counted on one channel.
#[derive(Debug, Default)]
struct Counters {
    /// Hellos with a valid nonce.
    hellos: AtomicU64,
    /// Proofs sent back (and recorded).
    proofs: AtomicU64,
    /// What was not a hello (another zone, a request without a nonce, an
    /// oversized head) or came past the connection limit.
    refused: AtomicU64,
    /// Per-packet or per-connection failures (a reply that could not be
    /// sent, a reset, a peer that stalled).
    errors: AtomicU64,
}

/// What one event on a channel counts as (see [`Counters`]).
#[derive(Clone, Copy)]
enum Tally {
    Hello,
    Proof,
    Refused,
    Error,
}

/// A listener's failures in a row: after [`BROKEN_AFTER`] of them it counts
/// as broken (the binary binds it again); any success starts over.
#[derive(Default)]
struct Streak(u32);

impl Streak {
    /// Takes a failure; whether the listener now counts as broken.
    fn failed(&mut self) -> bool {
        self.0 += 1;
        self.0 >= BROKEN_AFTER
    }

    fn ok(&mut self) {
        self.0 = 0;
    }
}

/// How home is doing, per channel (`tcp`, `udp`, `http`, `https`, `dns`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChannelStats {
    pub hellos: u64,
    pub proofs: u64,
    pub refused: u64,
    pub errors: u64,
}

const CHANNELS: [Channel; 5] = [
    Channel::Tcp,
    Channel::Udp,
    Channel::Http,
    Channel::Https,
    Channel::Dns,
];

fn slot(c: Channel) -> usize {
    CHANNELS.iter().position(|x| *x == c).unwrap_or(0)
}

/// The canary's state: the key, the DNS zone, where records go, and what
/// it counted. Nothing one peer sends ends it: per-packet and
/// per-connection failures are counted and logged (rate-limited).
pub struct Home {
    key: Key,
    zone: Option<String>,
    log: Mutex<Option<std::fs::File>>,
    counters: [Counters; 5],
    connections: Arc<Semaphore>,
    per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_source: usize,
    error_log: Mutex<RateLimited>,
}

/// One source's share of the connections, given back on drop.
struct SourceSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().expect("lock");
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl Home {
    /// `log`, if given, gets one JSON line per record (appended).
    pub fn new(key: Key, zone: Option<String>, log: Option<&Path>) -> Result<Arc<Home>, String> {
        Home::with_limits(
            key,
            zone,
            log,
            DEFAULT_MAX_CONNECTIONS,
            DEFAULT_MAX_PER_SOURCE,
        )
    }

    /// [`Home::new`] serving at most `max_connections` TCP and HTTP
    /// connections at once, `max_per_source` of them from one address.
    pub fn with_limits(
        key: Key,
        zone: Option<String>,
        log: Option<&Path>,
        max_connections: usize,
        max_per_source: usize,
    ) -> Result<Arc<Home>, String> {
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
            counters: Default::default(),
            connections: Arc::new(Semaphore::new(max_connections.max(1))),
            per_source: Default::default(),
            max_per_source: max_per_source.max(1),
            error_log: Mutex::new(RateLimited::new(10, Duration::from_secs(60))),
        }))
    }

    /// What home counted so far, per channel.
    pub fn stats(&self) -> BTreeMap<Channel, ChannelStats> {
        CHANNELS
            .iter()
            .map(|c| {
                let k = &self.counters[slot(*c)];
                (
                    *c,
                    ChannelStats {
                        hellos: k.hellos.load(Ordering::Relaxed),
                        proofs: k.proofs.load(Ordering::Relaxed),
                        refused: k.refused.load(Ordering::Relaxed),
                        errors: k.errors.load(Ordering::Relaxed),
                    },
                )
            })
            .collect()
    }

    /// A share of the connections for `ip`, unless it holds its most.
    fn source_slot(&self, ip: IpAddr) -> Option<SourceSlot> {
        let mut m = self.per_source.lock().expect("lock");
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max_per_source {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            map: self.per_source.clone(),
            ip,
        })
    }

    /// Counts one outcome on a channel.
    fn bump(&self, c: Channel, t: Tally) {
        let k = &self.counters[slot(c)];
        let n = match t {
            Tally::Hello => &k.hellos,
            Tally::Proof => &k.proofs,
            Tally::Refused => &k.refused,
            Tally::Error => &k.errors,
        };
        n.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a per-packet or per-connection failure and logs it, at most
    /// ten lines a minute whatever the peers do.
    fn failed(&self, c: Channel, peer: Option<SocketAddr>, what: &str, e: &std::io::Error) {
        self.bump(c, Tally::Error);
        let allowed = self.error_log.lock().expect("lock").allow(Instant::now());
        if let Some(held) = allowed {
            let from = peer.map(|p| format!(" ({p})")).unwrap_or_default();
            let more = if held > 0 {
                format!("; {held} more held back")
            } else {
                String::new()
            };
            eprintln!("beacon-home: {c}{from}: {what}: {e}{more}");
        }
    }

    fn record(&self, channel: Channel, source: SocketAddr, nonce: &str) {
        self.bump(channel, Tally::Proof);
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

    /// Answers TCP hellos; returns only when the listener is broken.
    pub async fn serve_tcp(self: Arc<Self>, l: TcpListener) -> std::io::Result<()> {
        self.accept(l, Channel::Tcp, None).await
    }

    /// Answers HTTP requests that carry a nonce (header `X-Outpost-Nonce`
    /// or query `outpost_nonce`); returns only when the listener is broken.
    pub async fn serve_http(self: Arc<Self>, l: TcpListener) -> std::io::Result<()> {
        self.accept(l, Channel::Http, None).await
    }

    /// [`Home::serve_http`] over TLS with `tls`'s certificate (see
    /// [`tls`]); a handshake that fails or stalls is counted as an error.
    pub async fn serve_https(
        self: Arc<Self>,
        l: TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<()> {
        self.accept(l, Channel::Https, Some(TlsAcceptor::from(tls)))
            .await
    }

    async fn accept(
        self: Arc<Self>,
        l: TcpListener,
        channel: Channel,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<()> {
        let mut streak = Streak::default();
        loop {
            let (s, peer) = match l.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, a connection reset before it was
                    // accepted, …: wait a little, the listener is fine.
                    self.failed(channel, None, "accept", &e);
                    if streak.failed() {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            streak.ok();
            let (Some(source), Ok(permit)) = (
                self.source_slot(peer.ip()),
                self.connections.clone().try_acquire_owned(),
            ) else {
                self.bump(channel, Tally::Refused);
                drop(s);
                continue;
            };
            let home = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let served = tokio::time::timeout(CONN_DEADLINE, async {
                    match (channel, tls) {
                        (Channel::Https, Some(tls)) => {
                            let s = tokio::time::timeout(HELLO_WAIT, tls.accept(s))
                                .await
                                .map_err(|_| {
                                    std::io::Error::from(std::io::ErrorKind::TimedOut)
                                })??;
                            home.http_peer(s, peer, Channel::Https).await
                        }
                        (Channel::Http, _) => home.http_peer(s, peer, Channel::Http).await,
                        _ => home.tcp_peer(s, peer).await,
                    }
                })
                .await
                .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut)));
                if let Err(e) = served {
                    home.failed(channel, Some(peer), "connection", &e);
                }
                drop(permit);
                drop(source);
            });
        }
    }

    async fn tcp_peer(&self, mut s: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < HELLO_CAP {
            let n = tokio::time::timeout(HELLO_WAIT, s.read(&mut chunk))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        match proof::parse_hello(&text) {
            Some(nonce) => {
                self.bump(Channel::Tcp, Tally::Hello);
                s.write_all(proof::reply(&self.key, nonce).as_bytes())
                    .await?;
                self.record(Channel::Tcp, peer, nonce);
            }
            None => {
                self.bump(Channel::Tcp, Tally::Refused);
            }
        }
        Ok(())
    }

    /// Answers UDP hellos; returns only when the socket is broken. A reply
    /// that cannot be sent (no route back to that peer, …) is counted and
    /// logged, never fatal: one packet must not blind the beacon.
    pub async fn serve_udp(self: Arc<Self>, s: UdpSocket) -> std::io::Result<()> {
        let mut buf = [0u8; 512];
        let mut streak = Streak::default();
        loop {
            let (n, peer) = match s.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    // E.g. an ICMP error for an earlier reply, reported on
                    // the next receive.
                    self.failed(Channel::Udp, None, "receive", &e);
                    if streak.failed() {
                        return Err(e);
                    }
                    continue;
                }
            };
            streak.ok();
            let text = String::from_utf8_lossy(&buf[..n]);
            let Some(nonce) = proof::parse_hello(&text) else {
                self.bump(Channel::Udp, Tally::Refused);
                continue;
            };
            self.bump(Channel::Udp, Tally::Hello);
            match s
                .send_to(proof::reply(&self.key, nonce).as_bytes(), peer)
                .await
            {
                Ok(_) => self.record(Channel::Udp, peer, nonce),
                Err(e) => self.failed(Channel::Udp, Some(peer), "reply", &e),
            }
        }
    }
}
