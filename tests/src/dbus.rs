//! A private dbus-daemon for one sensor (every [`crate::Sensor`] has one):
//! its own socket in its own directory, the shipped `org.outpost.Sensor1`
//! policy included, never the host's bus. Stopped on drop.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use crate::workspace;

pub struct DBus {
    /// The address to give `outpostd run --dbus` and `outpostctl --bus`.
    pub address: String,
    _dir: tempfile::TempDir,
    child: Child,
}

impl DBus {
    /// Starts a bus whose policy is the system bus's defaults plus the
    /// repository's `platform/dbus/org.outpost.Sensor1.conf`.
    pub fn start() -> DBus {
        let dir = tempfile::Builder::new()
            .prefix("outpost-bus-")
            .tempdir()
            .expect("temp dir");
        // Non-root callers (the authorization tests) must reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("bus");
        let policy = workspace().join("platform/dbus/org.outpost.Sensor1.conf");
        let conf = dir.path().join("bus.conf");
        let template = workspace().join("platform/dbus/private-bus.conf.in");
        let text = std::fs::read_to_string(&template)
            .unwrap_or_else(|e| panic!("{}: {e}", template.display()))
            .replace("@SOCKET@", &socket.display().to_string())
            .replace("@POLICY@", &policy.display().to_string());
        std::fs::write(&conf, text).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dbus-daemon (Debian package dbus)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("dbus-daemon prints its address");
        assert!(
            line.starts_with("unix:"),
            "dbus-daemon did not start: {line:?}"
        );
        DBus {
            address: line.trim().to_string(),
            _dir: dir,
            child,
        }
    }

    /// Runs `outpostctl --bus <this bus> <args>` as root.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(outpostctl_bin())
            .arg("--bus")
            .arg(&self.address)
            .args(args)
            .output()
            .expect("run outpostctl")
    }

    /// Runs outpostctl as `uid` with exactly the supplementary `groups`
    /// (names), through setpriv.
    pub fn ctl_as(&self, uid: u32, groups: &[&str], args: &[&str]) -> Output {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"));
        if groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            cmd.arg(format!("--groups={}", groups.join(",")));
        }
        cmd.arg(outpostctl_bin())
            .arg("--bus")
            .arg(&self.address)
            .args(args)
            .output()
            .expect("run setpriv outpostctl")
    }
}

impl Drop for DBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outpostctl next to outpostd.
pub fn outpostctl_bin() -> PathBuf {
    crate::outpostd_bin().with_file_name("outpostctl")
}
