//! `beacon-home`: the canary that runs outside the segment. It answers the
//! probe's hello with the HMAC of its nonce on every listener it is given,
//! and prints (and with `--log`, appends to a file) one JSON line per
//! escape it answered: `{ts, channel, source, nonce}`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use outpost_beacon::home::Home;
use outpost_beacon::proof::Key;
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
    /// Answer DNS TXT queries for <nonce>.<zone> here.
    #[arg(long)]
    dns: Vec<SocketAddr>,
    /// The DNS zone home is authoritative for (needed with --dns).
    #[arg(long)]
    zone: Option<String>,
    /// Append one JSON line per escape to this file.
    #[arg(long)]
    log: Option<PathBuf>,
}

async fn serve(a: Args) -> Result<(), String> {
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
    if a.tcp.len() + a.udp.len() + a.http.len() + a.dns.len() == 0 {
        return Err(
            "nothing to listen on: give at least one of --tcp, --udp, --http, --dns".into(),
        );
    }
    let home = Home::new(key, a.zone.clone(), a.log.as_deref())?;
    let mut set = tokio::task::JoinSet::new();
    let bind_err = |what: &str, at: &SocketAddr, e: std::io::Error| {
        format!("cannot listen for {what} on {at}: {e}")
    };
    for at in &a.tcp {
        let l = TcpListener::bind(at)
            .await
            .map_err(|e| bind_err("tcp", at, e))?;
        set.spawn(home.clone().serve_tcp(l));
    }
    for at in &a.http {
        let l = TcpListener::bind(at)
            .await
            .map_err(|e| bind_err("http", at, e))?;
        set.spawn(home.clone().serve_http(l));
    }
    for at in &a.udp {
        let s = UdpSocket::bind(at)
            .await
            .map_err(|e| bind_err("udp", at, e))?;
        set.spawn(home.clone().serve_udp(s));
    }
    for at in &a.dns {
        let s = UdpSocket::bind(at)
            .await
            .map_err(|e| bind_err("dns", at, e))?;
        set.spawn(home.clone().serve_dns(s));
    }
    eprintln!(
        "beacon-home: listening (tcp {:?}, udp {:?}, http {:?}, dns {:?})",
        a.tcp, a.udp, a.http, a.dns
    );
    match set.join_next().await {
        Some(Ok(Err(e))) => Err(format!("a listener failed: {e}")),
        _ => Err("a listener stopped".into()),
    }
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
