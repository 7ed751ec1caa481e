//! outpostd's own nats-server: started (or adopted, after an outpostd
//! restart) with the generated config, reloaded with SIGHUP when the
//! instruments change, watched, and restarted when it dies.

use std::fs;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::server_config;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::runtime::ffi;

/// nats-server failure, naming the file or binary.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "nats-server was not found (looked at {looked}) (fix: install Debian's nats-server, or pass --nats-server)"
    )]
    NotFound { looked: String },
    #[error("nats-server {what}: {detail}")]
    Io { what: String, detail: String },
    #[error("nats-server did not accept connections on 127.0.0.1:{port} within {secs}s; see {log}")]
    NotReady { port: u16, secs: u64, log: String },
}

fn io_err(what: impl Into<String>, e: impl std::fmt::Display) -> ServerError {
    ServerError::Io {
        what: what.into(),
        detail: e.to_string(),
    }
}

/// Finds the nats-server binary: `given`, else on `PATH`.
pub fn find_binary(given: Option<&Path>) -> Result<PathBuf, ServerError> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(ServerError::NotFound {
                looked: p.display().to_string(),
            })
        };
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let mut looked = Vec::new();
    for dir in path
        .split(':')
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"])
    {
        let p = Path::new(dir).join("nats-server");
        if p.is_file() {
            return Ok(p);
        }
        looked.push(p.display().to_string());
    }
    Err(ServerError::NotFound {
        looked: looked.join(", "),
    })
}

/// The port to serve on: `wanted`, or for 0 the one chosen before (kept in
/// `<dir>/port`) or a free one.
pub fn choose_port(dir: &Path, wanted: u16) -> Result<u16, ServerError> {
    let file = dir.join("port");
    if wanted != 0 {
        fs::write(&file, wanted.to_string()).map_err(|e| io_err(file.display().to_string(), e))?;
        return Ok(wanted);
    }
    if let Some(p) = fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return Ok(p);
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| io_err("port", e))?;
    let port = l.local_addr().map_err(|e| io_err("port", e))?.port();
    drop(l);
    fs::write(&file, port.to_string()).map_err(|e| io_err(file.display().to_string(), e))?;
    Ok(port)
}

/// The port a running outpostd's nats-server serves on.
pub fn read_port(dir: &Path) -> Option<u16> {
    fs::read_to_string(dir.join("port"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How the running server is known.
#[derive(Debug, Clone)]
pub struct NatsServer {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    pid: Option<i32>,
}

impl NatsServer {
    pub fn new(binary: PathBuf, dir: &Path, port: u16) -> NatsServer {
        NatsServer {
            binary,
            dir: dir.to_path_buf(),
            port,
            pid: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("nats-server.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    /// Writes the config if it changed; returns whether it did.
    pub fn write_config(&self, text: &str) -> Result<bool, ServerError> {
        let path = self.config_path();
        if fs::read_to_string(&path).ok().as_deref() == Some(text) {
            return Ok(false);
        }
        fs::create_dir_all(&self.dir).map_err(|e| io_err(self.dir.display().to_string(), e))?;
        let tmp = self.dir.join(".nats-server.conf.tmp");
        fs::write(&tmp, text).map_err(|e| io_err(tmp.display().to_string(), e))?;
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| io_err(tmp.display().to_string(), e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err(path.display().to_string(), e))?;
        Ok(true)
    }

    /// A server a previous outpostd started on this config and that still
    /// runs: its pid.
    fn running_pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.dir.join("nats-server.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("nats-server")
            && cmdline.contains(&*self.config_path().to_string_lossy()))
        .then_some(pid)
    }

    /// Adopts the server a previous outpostd left running, or starts one.
    /// Returns its pid and whether it was adopted.
    pub fn start_or_adopt(&mut self) -> Result<(i32, bool), ServerError> {
        if let Some(pid) = self.running_pid() {
            self.pid = Some(pid);
            info!(pid, port = self.port, "adopted the running nats-server");
            return Ok((pid, true));
        }
        fs::create_dir_all(self.dir.join("jetstream"))
            .map_err(|e| io_err(self.dir.display().to_string(), e))?;
        let child = std::process::Command::new(&self.binary)
            .arg("-c")
            .arg(self.config_path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| io_err(format!("cannot run {}", self.binary.display()), e))?;
        let pid = child.id() as i32;
        // Reaped by a thread so it never lingers as a zombie; the daemon
        // learns of its exit through a pidfd like any other process.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        self.pid = Some(pid);
        info!(pid, port = self.port, config = %self.config_path().display(), "nats-server started");
        Ok((pid, false))
    }

    /// Waits until the server accepts TCP connections.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ServerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            let ok = tokio::task::spawn_blocking(move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .await
            .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ServerError::NotReady {
                    port: self.port,
                    secs: timeout.as_secs(),
                    log: self.log_path().display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Moves the sensor off a config from before per-instrument accounts:
    /// a server still running on it is stopped (a reload cannot move
    /// JetStream between accounts), and the JetStream store of the global
    /// account, with the `EVENTS` stream and every event in it, becomes the
    /// platform account's. Nothing happens on a current config.
    pub async fn leave_global_account(&mut self) -> Result<(), ServerError> {
        let old = fs::read_to_string(self.config_path()).unwrap_or_default();
        if !server_config::is_global_account_config(&old) {
            return Ok(());
        }
        if let Some(pid) = self.running_pid() {
            info!(
                pid,
                "stopping the nats-server of an older outpostd to move its store into the platform's account"
            );
            self.pid = Some(pid);
            self.stop().await;
        }
        // nats-server keeps JetStream under `<store_dir>/jetstream/<account>`.
        let js = self.dir.join("jetstream").join("jetstream");
        let global = js.join("$G");
        let platform = js.join(server_config::PLATFORM_ACCOUNT);
        if global.is_dir() && !platform.exists() {
            fs::rename(&global, &platform).map_err(|e| {
                io_err(
                    format!("cannot move {} to {}", global.display(), platform.display()),
                    e,
                )
            })?;
            info!(from = %global.display(), to = %platform.display(), "event store moved into the platform's account");
        }
        Ok(())
    }

    /// Asks the server to re-read its config (SIGHUP).
    pub fn reload(&self) {
        if let Some(pid) = self.pid
            && let Err(e) = kill(Pid::from_raw(pid), Signal::SIGHUP)
        {
            warn!(pid, "cannot signal nats-server to reload: {e}");
        }
    }

    /// Resolves when the server process ends.
    pub async fn exited(pid: i32) {
        match ffi::pidfd_open(pid) {
            Ok(fd) => {
                let _ = ffi::wait_pidfd(fd).await;
            }
            Err(_) => {
                while Path::new(&format!("/proc/{pid}")).exists() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// The server died; forget it.
    pub fn forget(&mut self) {
        self.pid = None;
    }

    /// Takes the server a restart job started as this one.
    pub fn set_pid(&mut self, pid: i32) {
        self.pid = Some(pid);
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5s).
    pub async fn stop(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), Self::exited(pid))
            .await
            .is_err()
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            Self::exited(pid).await;
        }
        info!(pid, "nats-server stopped");
    }
}
