//! Supervision decisions, kept pure: how an instrument ended, and what
//! happens next under its restart policy and back-off.

use std::path::Path;
use std::time::Duration;

use outpost_protocol::RestartPolicy;
use outpost_protocol::desired::Backoff;
use serde::{Deserialize, Serialize};

/// How a container's entrypoint ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub signal_name: Option<String>,
    /// Human summary, e.g. `exited with status 3`.
    pub detail: String,
}

/// `exit.json` as outpost-init writes it.
#[derive(Debug, Deserialize)]
struct InitRecord {
    code: Option<i32>,
    signal: Option<i32>,
    signal_name: Option<String>,
    #[serde(default)]
    core_dumped: bool,
    error: Option<String>,
}

impl ExitRecord {
    /// The exit a record file says, or why it says nothing usable.
    pub fn from_file(file: &ExitFile, at_ms: i64) -> ExitRecord {
        match file {
            ExitFile::Missing => ExitRecord::from_init(None, at_ms),
            ExitFile::Text(t) => ExitRecord::from_init(Some(t), at_ms),
            ExitFile::Unreadable(why) => ExitRecord {
                at_ms,
                code: None,
                signal: None,
                signal_name: None,
                detail: format!("unreadable exit record ({why}); counted as a crash"),
            },
        }
    }

    /// Reads outpost-init's `exit.json`; `None` text means the file was
    /// missing (init itself was killed, or the container was torn down).
    pub fn from_init(text: Option<&str>, at_ms: i64) -> ExitRecord {
        let parsed = text.and_then(|t| serde_json::from_str::<InitRecord>(t).ok());
        match parsed {
            Some(r) => {
                let detail = match (&r.code, &r.signal, &r.error) {
                    (_, _, Some(e)) => e.clone(),
                    (Some(c), _, _) => format!("exited with status {c}"),
                    (None, Some(s), _) => format!(
                        "killed by signal {s} ({}){}",
                        r.signal_name.as_deref().unwrap_or("?"),
                        if r.core_dumped { ", core dumped" } else { "" }
                    ),
                    _ => "ended without a status".into(),
                };
                ExitRecord {
                    at_ms,
                    code: r.code,
                    signal: r.signal,
                    signal_name: r.signal_name,
                    detail,
                }
            }
            None => ExitRecord {
                at_ms,
                code: None,
                signal: None,
                signal_name: None,
                detail:
                    "the container's init ended without recording a status (killed from outside?)"
                        .into(),
            },
        }
    }

    /// Exit status 0.
    pub fn is_clean(&self) -> bool {
        self.code == Some(0)
    }
}

/// The most outpost-init writes into `exit.json`, with room to spare.
pub const EXIT_RECORD_MAX: u64 = 4096;

/// What was found where outpost-init records the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitFile {
    /// No record (init was killed, or the container was torn down).
    Missing,
    /// The record's text (not parsed yet).
    Text(String),
    /// Something is there that is not a plain, small file: the container
    /// can write its status directory, so this is hostile or broken.
    Unreadable(String),
}

/// Reads `exit.json` in `status_dir` without trusting it: the directory
/// is writable from inside the container. The file is opened with
/// `O_NOFOLLOW|O_NONBLOCK` (a symlink is refused, a FIFO does not block),
/// must be a regular file, and is read up to [`EXIT_RECORD_MAX`] bytes.
/// Blocking: call it from a blocking thread, with a timeout.
pub fn read_exit_file(status_dir: &Path) -> ExitFile {
    use std::io::Read;

    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::{Mode, SFlag, fstat};

    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir = match open(status_dir, dir_flags, Mode::empty()) {
        Ok(d) => d,
        Err(nix::errno::Errno::ENOENT) => return ExitFile::Missing,
        Err(e) => return ExitFile::Unreadable(format!("its status directory: {e}")),
    };
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = match openat(&dir, "exit.json", flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return ExitFile::Missing,
        Err(nix::errno::Errno::ELOOP) => {
            return ExitFile::Unreadable("it is a symbolic link".into());
        }
        Err(e) => return ExitFile::Unreadable(e.to_string()),
    };
    let st = match fstat(&fd) {
        Ok(st) => st,
        Err(e) => return ExitFile::Unreadable(e.to_string()),
    };
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if kind != SFlag::S_IFREG {
        let what = match kind {
            SFlag::S_IFIFO => "a FIFO",
            SFlag::S_IFDIR => "a directory",
            SFlag::S_IFSOCK => "a socket",
            SFlag::S_IFCHR | SFlag::S_IFBLK => "a device",
            _ => "not a regular file",
        };
        return ExitFile::Unreadable(format!("it is {what}"));
    }
    if st.st_size as u64 > EXIT_RECORD_MAX {
        return ExitFile::Unreadable(format!(
            "it holds {} bytes, more than the {EXIT_RECORD_MAX} outpost-init writes",
            st.st_size
        ));
    }
    let mut text = String::new();
    match std::fs::File::from(fd)
        .take(EXIT_RECORD_MAX)
        .read_to_string(&mut text)
    {
        Ok(_) => ExitFile::Text(text),
        Err(e) => ExitFile::Unreadable(e.to_string()),
    }
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start again after `after`; `failures` consecutive quick exits so far.
    Restart {
        after: Duration,
        failures: u32,
        crash_loop: bool,
    },
    /// Leave it down.
    StayDown,
}

/// Decides what follows an exit. `ran_for` is how long it had been running;
/// `failures` counts the consecutive quick exits before this one.
pub fn after_exit(
    policy: RestartPolicy,
    backoff: &Backoff,
    exit: &ExitRecord,
    ran_for: Duration,
    failures: u32,
) -> Decision {
    if !policy.restarts_after(exit.is_clean()) {
        return Decision::StayDown;
    }
    let failures = if ran_for >= backoff.stable_after {
        1
    } else {
        failures.saturating_add(1)
    };
    Decision::Restart {
        after: backoff.delay(failures),
        failures,
        crash_loop: backoff.is_crash_loop(failures),
    }
}

/// Lifecycle state names, as stored and shown.
/// Where an instrument is in its lifecycle. Stored and shown as its
/// kebab-case name ("crash-looping").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waiting for something outside it (e.g. its image).
    Pending,
    Starting,
    Running,
    Stopping,
    /// Down, restart scheduled.
    Backoff,
    /// Failing again and again; still retried at the capped back-off.
    CrashLooping,
    /// Exited with status 0 and not restarted.
    Exited,
    /// Failed and not restarted (policy `never` or `on-failure` exhausted).
    Crashed,
    /// Stopped on purpose (disabled).
    Stopped,
    /// Cannot be started as specified (bad config, broken image).
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Backoff => "backoff",
            State::CrashLooping => "crash-looping",
            State::Exited => "exited",
            State::Crashed => "crashed",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The states by their old constant names.
pub mod state {
    use super::State;
    pub const PENDING: State = State::Pending;
    pub const STARTING: State = State::Starting;
    pub const RUNNING: State = State::Running;
    pub const STOPPING: State = State::Stopping;
    pub const BACKOFF: State = State::Backoff;
    pub const CRASH_LOOPING: State = State::CrashLooping;
    pub const EXITED: State = State::Exited;
    pub const CRASHED: State = State::Crashed;
    pub const STOPPED: State = State::Stopped;
    pub const FAILED: State = State::Failed;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: Option<i32>) -> ExitRecord {
        ExitRecord {
            at_ms: 0,
            code,
            signal: None,
            signal_name: None,
            detail: String::new(),
        }
    }

    #[test]
    fn reads_init_records() {
        let e = ExitRecord::from_init(Some("{\"code\":3}\n"), 5);
        assert_eq!(e.code, Some(3));
        assert_eq!(e.detail, "exited with status 3");
        let e = ExitRecord::from_init(
            Some("{\"signal\":9,\"signal_name\":\"SIGKILL\",\"core_dumped\":false}"),
            5,
        );
        assert_eq!(e.signal, Some(9));
        assert_eq!(e.detail, "killed by signal 9 (SIGKILL)");
        let e = ExitRecord::from_init(None, 5);
        assert!(e.detail.contains("without recording"));
        assert!(!e.is_clean());
        let e = ExitRecord::from_init(
            Some("{\"code\":127,\"error\":\"cannot start \\\"/x\\\"\"}"),
            5,
        );
        assert_eq!(e.detail, "cannot start \"/x\"");
    }

    #[test]
    fn exit_files_are_read_without_trusting_them() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_exit_file(d.path()), ExitFile::Missing);
        std::fs::write(d.path().join("exit.json"), "{\"code\":3}\n").unwrap();
        assert_eq!(
            read_exit_file(d.path()),
            ExitFile::Text("{\"code\":3}\n".into())
        );
        std::fs::remove_file(d.path().join("exit.json")).unwrap();
        nix::unistd::mkfifo(
            &d.path().join("exit.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let ExitFile::Unreadable(why) = read_exit_file(d.path()) else {
            panic!("a FIFO is not read");
        };
        assert!(why.contains("FIFO"), "{why}");
        std::fs::remove_file(d.path().join("exit.json")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("exit.json")).unwrap();
        let ExitFile::Unreadable(why) = read_exit_file(d.path()) else {
            panic!("a symlink is not followed");
        };
        assert!(why.contains("symbolic link"), "{why}");
        std::fs::remove_file(d.path().join("exit.json")).unwrap();
        std::fs::write(d.path().join("exit.json"), vec![b' '; 1 << 20]).unwrap();
        let e = ExitRecord::from_file(&read_exit_file(d.path()), 0);
        assert!(
            e.detail.starts_with("unreadable exit record"),
            "{}",
            e.detail
        );
        assert!(!e.is_clean());
    }

    #[test]
    fn policies_and_backoff() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            stable_after: Duration::from_secs(10),
            crash_loop_after: 3,
        };
        let quick = Duration::from_millis(50);
        assert_eq!(
            after_exit(RestartPolicy::OnFailure, &b, &exit(Some(0)), quick, 0),
            Decision::StayDown
        );
        assert_eq!(
            after_exit(RestartPolicy::Never, &b, &exit(Some(1)), quick, 0),
            Decision::StayDown
        );
        let mut failures = 0;
        let mut seen = vec![];
        for _ in 0..5 {
            match after_exit(
                RestartPolicy::OnFailure,
                &b,
                &exit(Some(1)),
                quick,
                failures,
            ) {
                Decision::Restart {
                    after,
                    failures: f,
                    crash_loop,
                } => {
                    failures = f;
                    seen.push((after.as_millis(), crash_loop));
                }
                Decision::StayDown => panic!("on-failure must restart a failure"),
            }
        }
        assert_eq!(
            seen,
            vec![
                (100, false),
                (200, false),
                (400, true),
                (400, true),
                (400, true)
            ]
        );
        // A long run resets the count.
        match after_exit(
            RestartPolicy::Always,
            &b,
            &exit(Some(0)),
            Duration::from_secs(11),
            7,
        ) {
            Decision::Restart {
                after,
                failures,
                crash_loop,
            } => {
                assert_eq!((after.as_millis(), failures, crash_loop), (100, 1, false));
            }
            Decision::StayDown => panic!("always restarts"),
        }
    }
}
