//! What an attacker inside an instrument would try, each reporting what
//! happened as one JSON line (exit status 0 whatever the outcome: the
//! host side judges it).
//!
//! - `userns`: make a new user namespace (`unshare(CLONE_NEWUSER)`), and
//!   if that worked, a tmpfs and a network namespace inside it;
//! - `connect-many N SECONDS`: open N connections to the bus listener at
//!   127.0.0.1:4222, hold them, and say how many were closed by the other
//!   side within SECONDS;
//! - `hog MIB`: allocate and touch MIB mebibytes, printing progress (the
//!   memory limit should end it with SIGKILL first);
//! - `write-rate DIR MIB`: write MIB mebibytes into a file in DIR, fsync
//!   it, remove it, and say how fast (the benchmark runs the same binary
//!   inside and on the host).

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, unshare};
use serde_json::json;

pub fn run(args: &[&str]) -> Option<i32> {
    match args {
        ["userns"] => {
            let r = unshare(CloneFlags::CLONE_NEWUSER);
            let mut out = json!({"unshare_newuser": r.map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string())});
            if r.is_ok() {
                let tmpfs = nix::mount::mount(
                    Some("tmpfs"),
                    "/tmp",
                    Some("tmpfs"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                );
                out["tmpfs"] = json!(
                    tmpfs
                        .map(|_| "ok".to_string())
                        .unwrap_or_else(|e| e.to_string())
                );
                let netns = unshare(CloneFlags::CLONE_NEWNET);
                out["netns"] = json!(
                    netns
                        .map(|_| "ok".to_string())
                        .unwrap_or_else(|e| e.to_string())
                );
            }
            println!("{out}");
            Some(0)
        }
        ["connect-many", n, secs] => {
            let n: usize = n.parse().ok()?;
            let hold = Duration::from_secs(secs.parse().ok()?);
            let mut conns = Vec::new();
            let mut failed = 0;
            let mut first_error = String::new();
            for _ in 0..n {
                match TcpStream::connect_timeout(
                    &"127.0.0.1:4222".parse().expect("address"),
                    Duration::from_secs(2),
                ) {
                    Ok(c) => conns.push(c),
                    Err(e) => {
                        failed += 1;
                        if first_error.is_empty() {
                            first_error = e.to_string();
                        }
                    }
                }
            }
            // A connection the other side closed reads EOF (or an error);
            // one still spliced to nats-server gets its INFO line and then
            // stays open.
            let deadline = Instant::now() + hold;
            let mut closed = vec![false; conns.len()];
            while Instant::now() < deadline {
                for (i, c) in conns.iter_mut().enumerate() {
                    if closed[i] {
                        continue;
                    }
                    let _ = c.set_read_timeout(Some(Duration::from_millis(1)));
                    let mut buf = [0u8; 4096];
                    match c.read(&mut buf) {
                        Ok(0) => closed[i] = true,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => closed[i] = true,
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let closed_n = closed.iter().filter(|c| **c).count();
            println!(
                "{}",
                json!({
                    "opened": conns.len(),
                    "failed": failed,
                    "first_error": first_error,
                    "closed_by_peer": closed_n,
                    "still_open": conns.len() - closed_n,
                })
            );
            Some(0)
        }
        ["write-rate", dir, mib] => {
            use std::io::Write;
            let mib: usize = mib.parse().ok()?;
            let path = std::path::Path::new(dir).join(format!("write-rate-{}", std::process::id()));
            let block = vec![0x5a_u8; 1 << 20];
            let t0 = Instant::now();
            let written = (|| -> std::io::Result<()> {
                let mut f = std::fs::File::create(&path)?;
                for _ in 0..mib {
                    f.write_all(&block)?;
                }
                f.sync_all()
            })();
            let secs = t0.elapsed().as_secs_f64();
            let _ = std::fs::remove_file(&path);
            let out = match written {
                Ok(()) => {
                    json!({"mib": mib, "seconds": secs, "mb_per_s": (mib << 20) as f64 / secs / 1e6})
                }
                Err(e) => json!({"error": e.to_string()}),
            };
            println!("{out}");
            Some(0)
        }
        ["hog", mib] => {
            let mib: usize = mib.parse().ok()?;
            let mut held: Vec<Vec<u8>> = Vec::new();
            for i in 1..=mib {
                held.push(vec![0x5a; 1 << 20]);
                if i % 8 == 0 {
                    println!("{}", json!({"touched_mib": i}));
                }
            }
            println!("{}", json!({"touched_mib": mib, "done": true}));
            Some(0)
        }
        _ => None,
    }
}
