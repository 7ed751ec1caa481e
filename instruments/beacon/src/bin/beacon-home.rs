//! `beacon-home`: the canary that runs outside the segment. It answers the
//! probe's hello with the HMAC of its nonce on every listener it is given,
//! and prints (and with `--log`, appends to a file) one JSON line per
//! escape it answered: `{ts, channel, source, nonce}`.
//!
//! It exits non-zero only at start-up (bad arguments, an address it cannot
//! bind). Afterwards nothing a peer does stops it (see `home.rs`); a
//! listener whose socket truly fails is bound again with back-off. Every
//! `--stats-every` it prints one JSON line on stderr with what it counted
//! per channel, so an operator sees that home is alive.
//!
//! HTTPS (`--https`) presents the certificate at `--cert`/`--cert-key`; when
//! neither file exists, home makes a self-signed pair there and keeps it,
//! so the pin the probes are configured with survives restarts. Without
//! `--cert`/`--cert-key` the pair lives in memory and its pin changes with
//! every start. The pin is printed at start; `--print-pin` prints it (and
//! makes the pair, if need be) without serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use outpost_beacon::config::show_pin;
use outpost_beacon::home::{Home, tls};
use outpost_beacon::proof::Key;
use rustls::ServerConfig;
use tokio::net::{TcpListener, UdpSocket};

#[derive(Parser)]
#[command(
    version,
    about = "The canary outside the segment: proves escapes with an HMAC of the probe's nonce"
)]
struct Args {
    /// The key shared with escape-probe, hex.
    #[arg(long, env = "BEACON_HOME_KEY", hide_env_values = true)]
    key: Option<String>,
    /// A file with the shared key, hex.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Answer TCP hellos here (address:port).
    #[arg(long)]
    tcp: Vec<SocketAddr>,
    /// Answer UDP hellos here.
    #[arg(long)]
    udp: Vec<SocketAddr>,
    /// Answer HTTP requests here.
    #[arg(long)]
    http: Vec<SocketAddr>,
    /// Answer HTTPS requests here (see --cert, --key).
    #[arg(long)]
    https: Vec<SocketAddr>,
    /// The HTTPS certificate, PEM; made (self-signed) with --cert-key if
    /// neither file exists.
    #[arg(long, requires = "cert_key")]
    cert: Option<PathBuf>,
    /// The HTTPS certificate's private key, PEM (--key is the shared HMAC
    /// key).
    #[arg(long, requires = "cert")]
    cert_key: Option<PathBuf>,
    /// Print the HTTPS certificate's pin (sha256:…) for the probe's
    /// settings and exit; needs --cert and --key.
    #[arg(long, requires = "cert")]
    print_pin: bool,
    /// Answer DNS TXT queries for <nonce>.<zone> here.
    #[arg(long)]
    dns: Vec<SocketAddr>,
    /// The DNS zone home is authoritative for (needed with --dns).
    #[arg(long)]
    zone: Option<String>,
    /// Append one JSON line per escape to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// TCP and HTTP connections served at once; more are closed at once.
    #[arg(long, default_value_t = outpost_beacon::home::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Of those, how many one source address may hold.
    #[arg(long, default_value_t = outpost_beacon::home::DEFAULT_MAX_PER_SOURCE)]
    max_per_source: usize,
    /// Print a stats line (JSON, on stderr) this often; 0 turns it off.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    stats_every: Duration,
}

/// What one listener serves.
#[derive(Clone, Copy)]
enum Kind {
    Tcp,
    Http,
    Https,
    Udp,
    Dns,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::Udp => "udp",
            Kind::Dns => "dns",
        }
    }
}

/// A bound listener, of the kind it serves.
enum Listener {
    Tcp(TcpListener),
    Http(TcpListener),
    Https(TcpListener),
    Udp(UdpSocket),
    Dns(UdpSocket),
}

async fn bind(kind: Kind, at: SocketAddr) -> std::io::Result<Listener> {
    Ok(match kind {
        Kind::Tcp => Listener::Tcp(TcpListener::bind(at).await?),
        Kind::Http => Listener::Http(TcpListener::bind(at).await?),
        Kind::Https => Listener::Https(TcpListener::bind(at).await?),
        Kind::Udp => Listener::Udp(UdpSocket::bind(at).await?),
        Kind::Dns => Listener::Dns(UdpSocket::bind(at).await?),
    })
}

async fn serve_one(
    home: Arc<Home>,
    listener: Listener,
    tls: Option<Arc<ServerConfig>>,
) -> std::io::Result<()> {
    match listener {
        Listener::Tcp(l) => home.serve_tcp(l).await,
        Listener::Http(l) => home.serve_http(l).await,
        Listener::Https(l) => match tls {
            Some(t) => home.serve_https(l, t).await,
            None => Err(std::io::Error::other("no TLS certificate")),
        },
        Listener::Udp(s) => home.serve_udp(s).await,
        Listener::Dns(s) => home.serve_dns(s).await,
    }
}

/// Serves one listener for good: when its socket fails, binds the address
/// again, waiting 0.1 s doubling to 30 s between tries.
async fn keep_serving(
    home: Arc<Home>,
    kind: Kind,
    at: SocketAddr,
    first: Listener,
    tls: Option<Arc<ServerConfig>>,
) {
    let mut socket = Some(first);
    let mut wait = Duration::from_millis(100);
    loop {
        if let Some(s) = socket.take() {
            let t0 = std::time::Instant::now();
            let why = match serve_one(home.clone(), s, tls.clone()).await {
                Ok(()) => "it stopped".to_string(),
                Err(e) => e.to_string(),
            };
            if t0.elapsed() > Duration::from_secs(60) {
                wait = Duration::from_millis(100);
            }
            eprintln!(
                "beacon-home: the {} listener on {at} failed ({why}); binding it again",
                kind.name()
            );
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
        match bind(kind, at).await {
            Ok(s) => socket = Some(s),
            Err(e) => eprintln!(
                "beacon-home: cannot bind {} on {at} again: {e}; retrying in {wait:?}",
                kind.name()
            ),
        }
    }
}

/// The HTTPS certificate, when one is wanted: from (or made at)
/// --cert/--cert-key, else made in memory. Its pin is printed: on stdout
/// alone for --print-pin, else on stderr.
fn tls(a: &Args) -> Result<Option<Arc<ServerConfig>>, String> {
    if a.https.is_empty() && !a.print_pin {
        return Ok(None);
    }
    let names: Vec<String> = a
        .https
        .iter()
        .filter(|at| !at.ip().is_unspecified())
        .map(|at| at.ip().to_string())
        .collect();
    let (config, pin, note) = match (&a.cert, &a.cert_key) {
        (Some(c), Some(k)) => {
            let t = tls::load_or_make(c, k, &names).map_err(|e| e.to_string())?;
            let note = if t.made {
                format!(
                    "made a self-signed certificate at {} (key {}); it is kept",
                    c.display(),
                    k.display()
                )
            } else {
                format!("certificate {}", c.display())
            };
            (t.config, t.pin, note)
        }
        _ => {
            let (c, k) = tls::self_signed(&names).map_err(|e| e.to_string())?;
            let pin = tls::pin_of(&c);
            let config = tls::server_config(c, k).map_err(|e| e.to_string())?;
            let note = "a self-signed certificate in memory: its pin changes when home \
                        restarts; give --cert and --cert-key to keep one"
                .to_string();
            (config, pin, note)
        }
    };
    if a.print_pin {
        println!("{}", show_pin(&pin));
    } else {
        eprintln!("beacon-home: https: {note}; pin {}", show_pin(&pin));
    }
    Ok(Some(config))
}

async fn serve(a: Args) -> Result<(), String> {
    let tls = tls(&a)?;
    if a.print_pin {
        return Ok(());
    }
    let key = match (&a.key, &a.key_file) {
        (Some(k), None) => Key::from_hex(k).map_err(|e| format!("--key: {e}"))?,
        (None, Some(f)) => Key::from_hex(
            &std::fs::read_to_string(f).map_err(|e| format!("--key-file {}: {e}", f.display()))?,
        )
        .map_err(|e| format!("--key-file {}: {e}", f.display()))?,
        _ => {
            return Err("give the shared key with --key (or BEACON_HOME_KEY) or --key-file".into());
        }
    };
    if !a.dns.is_empty() && a.zone.is_none() {
        return Err("--dns needs --zone, the name the probe's dns targets use".into());
    }
    if a.tcp.len() + a.udp.len() + a.http.len() + a.https.len() + a.dns.len() == 0 {
        return Err(
            "nothing to listen on: give at least one of --tcp, --udp, --http, --https, --dns"
                .into(),
        );
    }
    let home = Home::with_limits(
        key,
        a.zone.clone(),
        a.log.as_deref(),
        a.max_connections,
        a.max_per_source,
    )?;
    // Every address is bound before anything is served: a start-up error
    // is the only way beacon-home exits.
    let mut listeners = Vec::new();
    for (kind, addrs) in [
        (Kind::Tcp, &a.tcp),
        (Kind::Http, &a.http),
        (Kind::Https, &a.https),
        (Kind::Udp, &a.udp),
        (Kind::Dns, &a.dns),
    ] {
        for at in addrs {
            let s = bind(kind, *at)
                .await
                .map_err(|e| format!("cannot listen for {} on {at}: {e}", kind.name()))?;
            listeners.push((kind, *at, s));
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for (kind, at, s) in listeners {
        set.spawn(keep_serving(home.clone(), kind, at, s, tls.clone()));
    }
    eprintln!(
        "beacon-home: listening (tcp {:?}, udp {:?}, http {:?}, https {:?}, dns {:?})",
        a.tcp, a.udp, a.http, a.https, a.dns
    );
    if !a.stats_every.is_zero() {
        let home = home.clone();
        let every = a.stats_every;
        set.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let line = serde_json::json!({
                    "ts": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                    "stats": home.stats(),
                });
                eprintln!("{line}");
            }
        });
    }
    while set.join_next().await.is_some() {}
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("beacon-home: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beacon-home: {e}");
            ExitCode::from(2)
        }
    }
}
