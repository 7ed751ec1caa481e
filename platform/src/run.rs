//! What the `outpostd` binary runs: `run`, the daemon, and
//! `start-container`, its internal helper. Every operator command is in
//! `outpostctl` ([`crate::ctl`]), which talks to `run` over D-Bus.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::daemon::{Command, Daemon, DaemonConfig, Parts};
use crate::messaging::server::{self, NatsServer};
use crate::messaging::shared::SharedBus;
use crate::paths::StateDir;
use crate::runtime::lxc::LxcRuntime;
use crate::runtime::lxc_config::path_problem;
use crate::shutdown::Shutdown;

/// Options of `outpostd run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The sensor file with the desired state (TOML; see README).
    #[arg(long)]
    pub sensor_file: Option<PathBuf>,
    /// The static outpost-init binary.
    #[arg(long, env = "OUTPOST_INIT")]
    pub init: Option<PathBuf>,
    /// Stop every instrument when outpostd exits.
    #[arg(long)]
    pub stop_on_exit: bool,
    /// Reconcile at least this often.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub reconcile_every: Duration,
    /// Time an instrument gets to stop after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub stop_grace: Duration,
    /// Rotate an instrument's console log at this many bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub console_log_size: u64,
    /// The nats-server binary (default: found on PATH).
    #[arg(long, env = "OUTPOST_NATS_SERVER")]
    pub nats_server: Option<PathBuf>,
    /// Port of the sensor's nats-server on 127.0.0.1 (0: pick a free one
    /// once and keep it).
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    /// Size limit of the EVENTS stream, in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    pub events_max_bytes: i64,
    /// Age limit of the EVENTS stream.
    #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
    pub events_max_age: Duration,
    /// Bus connections one instrument may have open at once.
    #[arg(long, default_value_t = crate::messaging::proxy::DEFAULT_MAX_CONNECTIONS as u16,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_bus_connections: u16,
    /// First host uid/gid of the instruments' user namespaces; each gets
    /// its own 65536 ids from here on.
    #[arg(long, default_value_t = crate::daemon::DEFAULT_ID_RANGE_START)]
    pub id_range_start: u32,
    /// Run instruments as host root with dropped capabilities, without
    /// user namespaces. Only for the benchmark's comparison: an instrument
    /// that escapes its container is then root on the host.
    #[arg(long, hide = true)]
    pub privileged_containers_for_benchmark: bool,
    /// Where to serve the local admin API (org.outpost.Sensor1) that
    /// outpostctl talks to: "system", "none", or a bus address.
    #[arg(long, env = "OUTPOST_DBUS", default_value = "system")]
    pub dbus: crate::dbus::BusChoice,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default;
    /// a loopback address unless --metrics-allow-remote).
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Allow --metrics on an address other hosts can reach.
    #[arg(long, requires = "metrics")]
    pub metrics_allow_remote: bool,
}

/// Runs the daemon until SIGTERM or SIGINT. SIGHUP re-reads the sensor file.
pub fn run(state_dir: &Path, opts: RunArgs) -> anyhow::Result<()> {
    if let Some(p) = path_problem(state_dir) {
        bail!("state directory: {p}");
    }
    crate::paths::create_private_dir(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    // Mount points under it are compared with /proc/self/mountinfo, which
    // has the real path.
    let state_dir = &state_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve state directory {}", state_dir.display()))?;
    let state = StateDir::new(state_dir);

    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.lock())
        .with_context(|| format!("cannot open {}", state.lock().display()))?;
    let mut lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another outpostd already runs on state directory {} (fix: stop it, or use another --state-dir)",
            state_dir.display()
        )
    })?;
    lock.set_len(0)?;
    writeln!(&mut *lock, "{}", std::process::id())?;

    raise_open_file_limit();
    let init = find_init(opts.init.as_deref())?;
    let cfg = DaemonConfig {
        state: state.clone(),
        sensor_file: opts.sensor_file.clone(),
        init,
        stop_on_exit: opts.stop_on_exit,
        reconcile_every: opts.reconcile_every,
        stop_grace: opts.stop_grace,
        console_log_size: opts.console_log_size,
        nats_server: opts.nats_server.clone(),
        nats_port: opts.nats_port,
        events: crate::messaging::bus::EventsLimits {
            max_bytes: opts.events_max_bytes,
            max_age: opts.events_max_age,
        },
        max_bus_connections: opts.max_bus_connections.into(),
        id_range_start: opts.id_range_start,
        privileged: opts.privileged_containers_for_benchmark,
    };
    let helper = std::env::current_exe().context("cannot find the outpostd binary")?;
    let rt = LxcRuntime::new(&state.lxcpath(), &state.instances(), &helper)
        .with_context(|| format!("cannot create {}", state.lxcpath().display()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let bus = opts.dbus.clone();
    let (nats_binary, nats_port) = (opts.nats_server.clone(), opts.nats_port);
    let metrics = opts.metrics.map(|a| (a, opts.metrics_allow_remote));
    let api_state = state.clone();
    runtime.block_on(async move {
        // The parts every server of outpostd shares, made here: the
        // nats-server (started or adopted by the daemon, with the
        // identities of the desired state), the platform's one bus client
        // (shared once it is up), and one shutdown token.
        let nats_dir = api_state.nats();
        std::fs::create_dir_all(&nats_dir)
            .with_context(|| format!("cannot create {}", nats_dir.display()))?;
        let nats = NatsServer::new(
            server::find_binary(nats_binary.as_deref())?,
            &nats_dir,
            server::choose_port(&nats_dir, nats_port)?,
        );
        let shared_bus = SharedBus::new();
        let shutdown = Shutdown::new();
        let parts = Parts {
            nats: Some(nats),
            shared_bus: shared_bus.clone(),
            shutdown: shutdown.clone(),
            ..Parts::default()
        };
        let daemon = Daemon::compose(cfg, rt, parts)?;
        let handle = daemon.handle();
        // Kept until the daemon ends; dropping it leaves the bus.
        let link = crate::fleet::link::spawn(
            crate::fleet::LinkFiles::new(api_state.root()),
            handle.clone(),
            shared_bus.clone(),
            shutdown.clone(),
        );
        let _announcements = tokio::spawn(crate::daemon::follow_announcements(
            shared_bus.clone(),
            handle.clone(),
            shutdown.clone(),
        ));
        let _api = crate::dbus::serve(&bus, handle.clone(), &api_state, shared_bus, link).await;
        if let Some((addr, remote)) = metrics {
            crate::metrics::serve(addr, remote, handle.clone(), shutdown.clone()).await?;
        }
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let stop = shutdown.clone();
        let signals = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { info!("SIGTERM received"); stop.trigger(); break; }
                    _ = int.recv() => { info!("SIGINT received"); stop.trigger(); break; }
                    _ = hup.recv() => { info!("SIGHUP received; re-reading the sensor file"); if handle.send(Command::Reload).await.is_err() { break; } }
                }
            }
        });
        let res = daemon.run().await;
        shutdown.trigger();
        signals.abort();
        res.map_err(anyhow::Error::from)
    })?;
    drop(lock);
    Ok(())
}

/// Open files outpostd wants: nats-server connections, proxies, pidfds
/// and log files for every instrument, with room to spare.
const WANTED_OPEN_FILES: u64 = 65536;

/// Raises the open-file limit (a systemd service gets 1024 by default,
/// which a few hundred proxied bus connections would exhaust) as far as
/// the kernel allows, and says what it got.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let want = WANTED_OPEN_FILES.max(soft).min(nr_open);
    let got = if setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).is_ok() {
        want
    } else if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    if got > soft {
        info!(from = soft, to = got, "open-file limit raised");
    } else if got < 4096 {
        tracing::warn!(
            limit = got,
            "open-file limit is low and could not be raised (fix: raise LimitNOFILE of the outpostd service)"
        );
    } else if got < WANTED_OPEN_FILES {
        info!(
            limit = got,
            "open-file limit kept at the hard limit (raising it needs CAP_SYS_RESOURCE)"
        );
    }
}

/// Finds a usable static `outpost-init`.
fn find_init(given: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    let candidates = match given {
        Some(p) => vec![p.to_path_buf()],
        None => init_candidates(),
    };
    for c in &candidates {
        if c.exists() {
            outpost_image::elf::check_static(c).map_err(|e| {
                anyhow::anyhow!("outpost-init: {e} (fix: build it with `./run build`)")
            })?;
            if let Some(p) = path_problem(c) {
                bail!("outpost-init: {p}");
            }
            return Ok(c.canonicalize()?);
        }
    }
    bail!(
        "no static outpost-init found (looked at {}) (fix: build it with `./run build`, or pass --init)",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Where a static `outpost-init` is looked for when `--init` is not given.
fn init_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Ok(p) = std::env::var("OUTPOST_INIT") {
        c.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        c.push(dir.join("outpost-init"));
    }
    c.push(PathBuf::from("/usr/lib/outpost/outpost-init"));
    c
}

/// `outpostd start-container`: the helper process that starts one
/// container with liblxc (see `runtime::lxc::LxcRuntime`) and prints its
/// init's pid.
pub fn start_container(lxcpath: &Path, name: &str, argv: &[String]) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let pid = match crate::runtime::lxc::start_here(lxcpath, name, argv) {
        Ok(pid) => pid,
        Err(crate::runtime::RuntimeError::ExitedAtOnce { .. }) => {
            println!("{}", crate::runtime::lxc::EXITED_AT_ONCE);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    println!("init-pid {pid}");
    println!("liblxc-start-ms {:.1}", t0.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
