//! Working inside an instrument's network namespace.
//!
//! A socket or netlink connection belongs to the namespace of the thread
//! that creates it. [`in_netns`] runs a closure on a fresh OS thread that
//! first `setns`es into the namespace of a process (the container's init),
//! so what it creates lives there; the thread then ends, never to be reused
//! in the wrong namespace.

use std::fs::File;
use std::io;

use futures::TryStreamExt;
use nix::sched::{CloneFlags, setns};
use rtnetlink::LinkUnspec;

/// Runs `f` inside the network namespace of process `pid`.
pub fn in_netns<T, F>(pid: i32, f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::Builder::new()
        .name(format!("netns-{pid}"))
        .spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
                io::Error::other(format!(
                    "cannot enter the network namespace of pid {pid}: {e}"
                ))
            })?;
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Brings interface `name` up with rtnetlink, in the calling thread's
/// namespace (call it inside [`in_netns`]).
pub fn link_up_here(name: &str) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        let link = handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
            .map_err(|e| io::Error::other(format!("interface {name}: {e}")))?
            .ok_or_else(|| io::Error::other(format!("interface {name} does not exist")))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(link.header.index).up().build())
            .execute()
            .await
            .map_err(|e| io::Error::other(format!("cannot bring {name} up: {e}")))
    })
}
