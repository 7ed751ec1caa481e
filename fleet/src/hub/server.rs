//! The embedded hub: one `nats-server` the fleet starts and supervises
//! (JetStream, TLS 1.2+, operator mode with a full account resolver, so
//! sensor credentials come and go without a restart).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tracing::{error, info, warn};

use super::keys::FleetKeys;
use crate::shutdown::Shutdown;
use crate::tls::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot run {binary}: {source} (fix: install nats-server, `apt install nats-server`, or give --nats-server)"
    )]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
}

/// What a hub node's configuration says.
pub struct NodeConfig<'a> {
    pub name: &'a str,
    pub listen: &'a str,
    pub tls: &'a TlsFiles,
    pub dir: &'a Path,
    /// `host:port` to listen for cluster routes, and the routes to join.
    pub cluster: Option<(&'a str, Vec<String>)>,
}

/// The text of a hub node's nats-server configuration: the fleet's
/// operator, its system and fleet accounts preloaded, a full resolver in
/// `dir/jwt` (updates arrive over the system account), JetStream in
/// `dir/js`, TLS with nats-server's own minimum of TLS 1.2.
pub fn config_text(node: &NodeConfig<'_>, keys: &FleetKeys) -> String {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let mut s = format!(
        "server_name: {name:?}\nlisten: {listen:?}\nmax_payload: 1MB\n\
         tls {{\n  cert_file: {cert}\n  key_file: {key}\n  timeout: 5\n}}\n\
         jetstream {{\n  store_dir: {js}\n  max_memory_store: 256MB\n  max_file_store: 20GB\n}}\n\
         operator: {op:?}\nsystem_account: {sys:?}\n\
         resolver {{\n  type: full\n  dir: {jwt}\n  allow_delete: false\n  interval: \"30s\"\n  timeout: \"5s\"\n}}\n\
         resolver_preload {{\n  {sys}: {sysjwt:?}\n  {acct}: {acctjwt:?}\n}}\n",
        name = node.name,
        listen = node.listen,
        cert = q(&node.tls.cert),
        key = q(&node.tls.key),
        js = q(&node.dir.join("js")),
        op = keys.operator_jwt(),
        sys = keys.system.public_key(),
        jwt = q(&node.dir.join("jwt")),
        sysjwt = keys.system_jwt(),
        acct = keys.account.public_key(),
        acctjwt = keys.account_jwt(&Default::default()),
    );
    if let Some((listen, routes)) = &node.cluster {
        let routes: Vec<String> = routes.iter().map(|r| format!("{r:?}")).collect();
        s.push_str(&format!(
            "cluster {{\n  name: \"outpost-hub\"\n  listen: {listen:?}\n  routes: [{}]\n}}\n",
            routes.join(", ")
        ));
    }
    s
}

/// Starts nats-server on `config` and restarts it with back-off whenever
/// it exits, until `shutdown`; then stops it.
pub fn supervise(
    binary: PathBuf,
    config: PathBuf,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let mut child = spawn(&binary, &config)?;
    Ok(tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::select! {
                status = child.wait() => {
                    warn!(config = %config.display(), "hub nats-server exited ({status:?}); restarting in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    match spawn(&binary, &config) {
                        Ok(c) => { child = c; info!("hub nats-server started again"); }
                        Err(e) => error!("{e}"),
                    }
                }
                _ = shutdown.cancelled() => {
                    stop(&mut child).await;
                    return;
                }
            }
        }
    }))
}

fn spawn(binary: &Path, config: &Path) -> Result<Child, ServerError> {
    let log = config.with_extension("log");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|source| ServerError::Io {
            path: log.clone(),
            source,
        })?;
    let err = out.try_clone().map_err(|source| ServerError::Io {
        path: log.clone(),
        source,
    })?;
    Command::new(binary)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ServerError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })
}

async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
