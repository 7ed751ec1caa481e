//! `example-instrument`: the smallest honest instrument.
//!
//! At every start it appends one JSON line to
//! `/var/lib/instrument/boots.jsonl` saying which boot this is and what it
//! found in its transient storage (which must be empty: `/run/instrument` is
//! a fresh tmpfs at every start), then leaves a marker in `/run/instrument`
//! and prints a heartbeat line every `--heartbeat` (default 1s). SIGTERM
//! ends it cleanly with status 0.
//!
//! `--exit-after DURATION --exit-code N` makes it end on its own, which the
//! platform's restart tests use as a real crash.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

const PERSIST: &str = "/var/lib/instrument";
const TRANSIENT: &str = "/run/instrument";

struct Args {
    heartbeat: Duration,
    exit_after: Option<Duration>,
    exit_code: i32,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration unit in {s:?}: use ms, s or m")),
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        heartbeat: Duration::from_secs(1),
        exit_after: None,
        exit_code: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--heartbeat" => a.heartbeat = parse_duration(&value()?)?,
            "--exit-after" => a.exit_after = Some(parse_duration(&value()?)?),
            "--exit-code" => {
                a.exit_code = value()?
                    .parse()
                    .map_err(|_| "--exit-code needs an integer".to_string())?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("example-instrument: {e}");
            std::process::exit(2);
        }
    };
    let name = std::env::var("OUTPOST_INSTRUMENT").unwrap_or_else(|_| "unknown".into());

    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    term.add(Signal::SIGINT);
    term.thread_block().expect("block SIGTERM");

    let boot = match record_boot(&name) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("example-instrument: cannot use storage: {e}");
            std::process::exit(3);
        }
    };
    println!("example-instrument {name}: boot {boot} started");

    let heartbeat = args.heartbeat;
    std::thread::spawn(move || {
        let mut n: u64 = 0;
        loop {
            n += 1;
            println!("heartbeat {n}");
            std::thread::sleep(heartbeat);
        }
    });
    if let Some(after) = args.exit_after {
        let code = args.exit_code;
        std::thread::spawn(move || {
            std::thread::sleep(after);
            eprintln!("example-instrument: exiting with status {code} as asked");
            std::process::exit(code);
        });
    }

    let sig = term.wait().expect("sigwait");
    println!("example-instrument {name}: {sig:?} received, stopping");
    std::process::exit(0);
}

/// Counts this boot in persistent storage and notes what transient storage
/// held before this start.
fn record_boot(name: &str) -> std::io::Result<u64> {
    let log = Path::new(PERSIST).join("boots.jsonl");
    let previous = fs::read_to_string(&log)
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0);
    let boot = previous + 1;
    let mut held: Vec<String> = fs::read_dir(TRANSIENT)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    held.sort();
    let held_json: Vec<String> = held.iter().map(|h| format!("{h:?}")).collect();
    let mut f = OpenOptions::new().create(true).append(true).open(&log)?;
    writeln!(
        f,
        "{{\"boot\":{boot},\"instrument\":{name:?},\"transient_held\":[{}]}}",
        held_json.join(",")
    )?;
    f.sync_all()?;
    fs::write(
        Path::new(TRANSIENT).join(format!("boot-{boot}")),
        b"alive\n",
    )?;
    Ok(boot)
}
