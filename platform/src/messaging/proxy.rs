//! The loopback proxy: a listener on 127.0.0.1:4222 *inside* an
//! instrument's network namespace, spliced to outpostd's nats-server on the
//! host's loopback. The instrument's namespace has no route to the host;
//! this proxy is its only way to the bus, and it reaches only the bus.
//!
//! The listening socket is made by a thread that entered the namespace
//! (see [`crate::netns`]), then handed to tokio. Dropping the
//! [`Proxy`] closes the listener and every spliced connection.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::netns;

/// The port instruments connect to inside their namespace.
pub const INSIDE_PORT: u16 = 4222;

/// A running proxy; stopped when dropped.
pub struct Proxy {
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens the listener in the namespace of process `pid` (bringing `lo` up
/// through netlink first) and splices every connection to `upstream`.
pub async fn start(instrument: &str, pid: i32, upstream: SocketAddr) -> std::io::Result<Proxy> {
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
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((mut inside, _)) => {
                        let name = name.clone();
                        conns.spawn(async move {
                            match TcpStream::connect(upstream).await {
                                Ok(mut bus) => {
                                    let _ = inside.set_nodelay(true);
                                    let _ = bus.set_nodelay(true);
                                    let r = tokio::io::copy_bidirectional_with_sizes(
                                        &mut inside, &mut bus, 64 * 1024, 64 * 1024,
                                    )
                                    .await;
                                    debug!(instrument = %name, "bus connection closed: {r:?}");
                                }
                                Err(e) => debug!(instrument = %name, "bus unreachable ({e}); closing the instrument's connection"),
                            }
                        });
                    }
                    Err(e) => {
                        warn!(instrument = %name, "proxy accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(Proxy { task })
}
