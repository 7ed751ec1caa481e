//! `escape-probe`: every interval, tries every canary target once and
//! prints one JSON line per attempt on stdout (see
//! `outpost_protocol::beacon`). Settings come from `--config FILE` (TOML)
//! and/or arguments; arguments add targets and override settings. Bad
//! settings end it with status 2 and a message that names the field.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use outpost_beacon::config::{DnsTarget, HttpsCanary, ProbeConfig};
use outpost_beacon::probe;

#[derive(Parser)]
#[command(
    version,
    about = "Tries to leave the network segment it runs in, and proves it when it can"
)]
struct Args {
    /// A TOML file with the settings (interval, timeout, interface, key or
    /// key_file, tcp, udp, dns, icmp, http).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Time between rounds, like 2s.
    #[arg(long)]
    interval: Option<String>,
    /// How long one attempt may take.
    #[arg(long)]
    timeout: Option<String>,
    /// Leave by this interface only.
    #[arg(long)]
    interface: Option<String>,
    /// The key shared with beacon-home, hex.
    #[arg(long, env = "ESCAPE_PROBE_KEY", hide_env_values = true)]
    key: Option<String>,
    /// A file with the shared key, hex.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// A TCP canary, address:port (repeatable).
    #[arg(long)]
    tcp: Vec<String>,
    /// A UDP canary, address:port (repeatable).
    #[arg(long)]
    udp: Vec<String>,
    /// A DNS canary, zone@resolver[:port] (repeatable).
    #[arg(long)]
    dns: Vec<String>,
    /// An ICMP echo target, IPv4 address (repeatable).
    #[arg(long)]
    icmp: Vec<String>,
    /// An HTTP canary, http://address:port/path (repeatable).
    #[arg(long)]
    http: Vec<String>,
    /// An HTTPS canary with the pin of home's certificate,
    /// "https://address:port/path=sha256:<hex>" (repeatable).
    #[arg(long)]
    https: Vec<String>,
    /// An HTTP proxy to try every HTTP, HTTPS and TCP canary through as
    /// well, "http://address:port" (repeatable).
    #[arg(long)]
    proxy: Vec<String>,
    /// Run one round and exit: status 0 if nothing escaped, 1 if something did.
    #[arg(long)]
    once: bool,
}

fn settings(a: Args) -> Result<(ProbeConfig, bool), String> {
    let mut c = match &a.config {
        Some(p) => ProbeConfig::from_file(p)?,
        None => ProbeConfig::default(),
    };
    c.interval = a.interval.or(c.interval);
    c.timeout = a.timeout.or(c.timeout);
    c.interface = a.interface.or(c.interface);
    if a.key.is_some() || a.key_file.is_some() {
        c.key = a.key;
        c.key_file = a.key_file;
    }
    c.tcp.extend(a.tcp);
    c.udp.extend(a.udp);
    c.icmp.extend(a.icmp);
    c.http.extend(a.http);
    c.proxies.extend(a.proxy);
    for h in a.https {
        let (url, pin) = h.rsplit_once("=sha256:").ok_or_else(|| {
            format!(
                "--https {h:?} must be url=sha256:<pin>, like \
                 https://203.0.113.7:8443/canary=sha256:1a22…; beacon-home --print-pin prints it"
            )
        })?;
        c.https.push(HttpsCanary {
            url: url.into(),
            pin: format!("sha256:{pin}"),
        });
    }
    for d in a.dns {
        let (name, resolver) = d.split_once('@').ok_or_else(|| {
            format!("--dns {d:?} must be zone@resolver, like canary.example.org@10.0.0.53")
        })?;
        c.dns.push(DnsTarget {
            name: name.into(),
            resolvers: vec![resolver.into()],
        });
    }
    Ok((c, a.once))
}

fn main() -> ExitCode {
    let (config, once) = match settings(Args::parse()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("escape-probe: {e}");
            return ExitCode::from(2);
        }
    };
    let plan = match config.plan() {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("escape-probe: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("escape-probe: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "escape-probe: {} attempts every {}{}",
        plan.attempts(),
        humantime::format_duration(plan.interval),
        plan.interface
            .as_deref()
            .map(|i| format!(" by interface {i}"))
            .unwrap_or_default()
    );
    rt.block_on(async move {
        let mut tick = tokio::time::interval(plan.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut escaped = false;
            probe::round(&plan, |a| {
                escaped |= a.outcome == outpost_protocol::beacon::Outcome::Escaped;
                println!("{}", a.to_line());
            })
            .await;
            if once {
                return if escaped {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                };
            }
        }
    })
}
