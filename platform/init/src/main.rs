//! `outpost-init`: PID 1 inside every Outpost container.
//!
//! `outpostd` bind-mounts this static binary read-only at `/.outpost/init`
//! and starts the container with `/.outpost/init -- <entrypoint…>`. It:
//!
//! - connects the entrypoint's stdout and stderr to `/dev/console`, whose
//!   output the LXC monitor writes to the instrument's rotated log on the
//!   host (the console is switched to raw output so the log is byte-exact);
//! - forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the
//!   entrypoint's process group;
//! - reaps every orphan, as PID 1 must;
//! - when the entrypoint ends, writes its exit status as JSON to
//!   `<status-dir>/exit.json` (a host directory), stops what is left in the
//!   container, and exits with the same status.
//!
//! It uses no `unsafe`: processes are spawned through `std::process`, and
//! signals are taken with `signal-hook`'s handler-and-pipe iterator. The
//! signal mask is never changed: a child inherits the mask (std does not
//! reset it), so blocking signals here would leave the instrument deaf to
//! SIGTERM.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::sys::termios::{self, OutputFlags, SetArg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// How long what is left in the container gets after the entrypoint ended.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

struct Args {
    status_dir: PathBuf,
    /// A file to wait for before the entrypoint runs: outpostd writes it
    /// once the instrument's interfaces are in place, so the instrument
    /// never sees a half-made network.
    wait_for: Option<PathBuf>,
    program: Vec<String>,
}

/// How long the entrypoint waits for its interfaces before init gives up.
const WAIT_FOR_LIMIT: Duration = Duration::from_secs(60);

fn parse_args() -> Result<Args, String> {
    let mut status_dir = PathBuf::from("/.outpost/status");
    let mut wait_for = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--status-dir" => {
                status_dir = it.next().ok_or("--status-dir needs a directory")?.into();
            }
            "--wait-for" => {
                wait_for = Some(it.next().ok_or("--wait-for needs a file")?.into());
            }
            "--" => {
                let program: Vec<String> = it.collect();
                if program.is_empty() {
                    return Err("no program after '--'".into());
                }
                return Ok(Args {
                    status_dir,
                    wait_for,
                    program,
                });
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Err("usage: outpost-init [--status-dir DIR] [--wait-for FILE] -- PROGRAM [ARGS...]".into())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("outpost-init: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(run(args));
}

fn run(args: Args) -> i32 {
    let console = open_console();
    let wanted: Vec<i32> = FORWARDED
        .iter()
        .chain([Signal::SIGCHLD].iter())
        .map(|s| *s as i32)
        .collect();
    let mut signals = match signal_hook::iterator::Signals::new(&wanted) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("outpost-init: cannot handle signals: {e}");
            return 1;
        }
    };

    let _ = fs::remove_file(args.status_dir.join("exit.json"));
    if let Some(file) = &args.wait_for {
        let t0 = Instant::now();
        while !file.exists() {
            if signals.pending().any(|s| s == Signal::SIGTERM as i32) {
                return 143;
            }
            if t0.elapsed() > WAIT_FOR_LIMIT {
                let msg = format!(
                    "{} did not appear within {WAIT_FOR_LIMIT:?}",
                    file.display()
                );
                say(&console, &format!("outpost-init: {msg}\n"));
                record(
                    &args.status_dir,
                    &format!("{{\"code\":125,\"error\":{}}}", json_string(&msg)),
                );
                return 125;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut cmd = Command::new(&args.program[0]);
    cmd.args(&args.program[1..])
        .stdin(Stdio::null())
        .process_group(0);
    if let Some(c) = &console {
        if let (Ok(out), Ok(err)) = (c.try_clone(), c.try_clone()) {
            cmd.stdout(out).stderr(err);
        }
    }
    // Caught signals return to their default action in the child at exec.
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("cannot start {:?}: {e}", args.program[0]);
            say(&console, &format!("outpost-init: {msg}\n"));
            record(
                &args.status_dir,
                &format!("{{\"code\":127,\"error\":{}}}", json_string(&msg)),
            );
            return 127;
        }
    };
    let main = Pid::from_raw(child.id() as i32);
    // We reap with waitpid(-1); the std handle is not waited on.
    drop(child);

    // The entrypoint may have ended before the handler saw SIGCHLD.
    let mut status = reap(main);
    while status.is_none() {
        for raw in signals.wait() {
            let Ok(sig) = Signal::try_from(raw) else {
                continue;
            };
            if sig == Signal::SIGCHLD {
                if let Some(st) = reap(main) {
                    status = Some(st);
                    break;
                }
            } else {
                // Forward to the entrypoint's whole process group.
                let _ = signal::kill(Pid::from_raw(-main.as_raw()), sig);
            }
        }
    }
    let status = status.expect("loop ends with a status");

    let (json, code) = match status {
        WaitStatus::Exited(_, code) => (format!("{{\"code\":{code}}}"), code),
        WaitStatus::Signaled(_, sig, core) => (
            format!(
                "{{\"signal\":{},\"signal_name\":\"{}\",\"core_dumped\":{core}}}",
                sig as i32,
                sig.as_str()
            ),
            128 + sig as i32,
        ),
        _ => ("{\"code\":1}".to_string(), 1),
    };
    record(&args.status_dir, &json);
    stop_leftovers();
    code
}

/// Reaps every exited child; returns the entrypoint's status once it ended.
fn reap(main: Pid) -> Option<WaitStatus> {
    let mut main_status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return main_status,
            Ok(st) => {
                if st.pid() == Some(main) {
                    main_status = Some(st);
                }
            }
        }
    }
}

/// Stops whatever the entrypoint left behind (only as PID 1 of a
/// container: elsewhere `kill(-1)` would reach the whole host).
fn stop_leftovers() {
    if std::process::id() != 1 {
        return;
    }
    let all = Pid::from_raw(-1);
    if signal::kill(all, Signal::SIGTERM).is_err() {
        return; // ESRCH: nothing left
    }
    let deadline = Instant::now() + LEFTOVER_GRACE;
    while Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            _ => {}
        }
    }
    let _ = signal::kill(all, Signal::SIGKILL);
    while waitpid(None, None).is_ok() {}
}

/// Opens `/dev/console` for the entrypoint's output, in raw output mode so
/// that `\n` is not turned into `\r\n` in the log.
fn open_console() -> Option<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open("/dev/console")
        .ok()?;
    if let Ok(mut t) = termios::tcgetattr(f.as_fd()) {
        t.output_flags.remove(OutputFlags::OPOST);
        let _ = termios::tcsetattr(f.as_fd(), SetArg::TCSANOW, &t);
    }
    Some(f)
}

fn say(console: &Option<File>, msg: &str) {
    match console {
        Some(c) => {
            let _ = (&*c).write_all(msg.as_bytes());
        }
        None => eprint!("{msg}"),
    }
}

/// Writes `exit.json` atomically so the host never reads half a record.
fn record(dir: &Path, json: &str) {
    if !dir.is_dir() {
        return;
    }
    let tmp = dir.join(".exit.json.tmp");
    let ok = fs::write(&tmp, format!("{json}\n")).is_ok()
        && fs::rename(&tmp, dir.join("exit.json")).is_ok();
    if !ok {
        eprintln!(
            "outpost-init: cannot record exit status in {}",
            dir.display()
        );
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
