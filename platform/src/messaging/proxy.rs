//! The loopback proxy: a listener on 127.0.0.1:4222 *inside* an
//! instrument's network namespace, spliced to outpostd's nats-server on the
//! host's loopback. The instrument's namespace has no route to the host;
//! this proxy is its only way to the bus, and it reaches only the bus.
//!
//! The listening socket is made by a thread that entered the namespace
//! (see [`crate::netns`]), then handed to tokio. Dropping the
//! [`Proxy`] closes the listener and every spliced connection.
//!
//! What an instrument can cost outpostd through it is bounded: at most
//! `max_connections` spliced connections at once (more are accepted and
//! closed at once, so they never queue in the kernel), and a connection is
//! closed on both sides as soon as either side closes, so a peer that
//! never closes its end does not keep a descriptor of outpostd's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::netns;
use crate::observability::RateLimited;

/// The port instruments connect to inside their namespace.
pub const INSIDE_PORT: u16 = 4222;

/// Connections one instrument may have open through its proxy by default.
/// An SDK instrument uses one; the rest is room for reconnects and tools.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// A running proxy; stopped when dropped.
pub struct Proxy {
    task: JoinHandle<()>,
    stats: Arc<Stats>,
}

/// What a proxy has done since it started.
#[derive(Debug, Default)]
struct Stats {
    open: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// A proxy's connection counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProxyStats {
    /// Spliced connections open now.
    pub open: u64,
    /// Connections accepted since the proxy started.
    pub accepted: u64,
    /// Connections closed at once because the instrument had the most it
    /// may have.
    pub refused: u64,
}

impl Proxy {
    /// Its connection counts now.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            open: self.stats.open.load(Ordering::Relaxed),
            accepted: self.stats.accepted.load(Ordering::Relaxed),
            refused: self.stats.refused.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens the listener in the namespace of process `pid` (bringing `lo` up
/// through netlink first) and splices up to `max_connections` connections
/// at once to `upstream`.
pub async fn start(
    instrument: &str,
    pid: i32,
    upstream: SocketAddr,
    max_connections: usize,
) -> std::io::Result<Proxy> {
    let std_listener = tokio::task::spawn_blocking(move || {
        netns::in_netns(pid, || {
            netns::link_up_here("lo")?;
            let l = std::net::TcpListener::bind(("127.0.0.1", INSIDE_PORT))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
    })
    .await
    .map_err(std::io::Error::other)??;
    let listener = TcpListener::from_std(std_listener)?;
    let name = instrument.to_string();
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let stats = Arc::new(Stats::default());
    let st = stats.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        let mut refused_log = RateLimited::new(3, Duration::from_secs(60));
        let mut accept_log = RateLimited::new(3, Duration::from_secs(60));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((inside, _)) => {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            drop(inside);
                            st.refused.fetch_add(1, Ordering::Relaxed);
                            if let Some(held) = refused_log.allow(Instant::now()) {
                                warn!(
                                    instrument = %name,
                                    max_connections,
                                    held_back = held,
                                    "bus connection refused: the instrument has the most connections it may have"
                                );
                            }
                            continue;
                        };
                        let name = name.clone();
                        st.accepted.fetch_add(1, Ordering::Relaxed);
                        st.open.fetch_add(1, Ordering::Relaxed);
                        let open = st.clone();
                        conns.spawn(async move {
                            splice(&name, inside, upstream).await;
                            open.open.fetch_sub(1, Ordering::Relaxed);
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        if let Some(held) = accept_log.allow(Instant::now()) {
                            warn!(instrument = %name, held_back = held, "proxy accept failed: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(Proxy { task, stats })
}

/// Copies both ways until either side closes or fails, then closes both.
async fn splice(name: &str, mut inside: TcpStream, upstream: SocketAddr) {
    let mut bus = match TcpStream::connect(upstream).await {
        Ok(b) => b,
        Err(e) => {
            debug!(instrument = %name, "bus unreachable ({e}); closing the instrument's connection");
            return;
        }
    };
    let _ = inside.set_nodelay(true);
    let _ = bus.set_nodelay(true);
    let (in_r, mut in_w) = inside.split();
    let (bus_r, mut bus_w) = bus.split();
    let mut in_r = BufReader::with_capacity(64 * 1024, in_r);
    let mut bus_r = BufReader::with_capacity(64 * 1024, bus_r);
    let (up, down) = (
        tokio::io::copy_buf(&mut in_r, &mut bus_w),
        tokio::io::copy_buf(&mut bus_r, &mut in_w),
    );
    let why = tokio::select! {
        r = up => format!("instrument side ended: {r:?}"),
        r = down => format!("bus side ended: {r:?}"),
    };
    let _ = in_w.shutdown().await;
    let _ = bus_w.shutdown().await;
    debug!(instrument = %name, "bus connection closed ({why})");
}
