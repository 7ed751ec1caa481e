//! Host interfaces and namespaces a test or the benchmark makes for itself
//! with iproute2, removed on drop, pass or fail.

use std::process::Command;

/// Runs `cmd` and returns its stdout; panics with the command and what it
/// said when it fails.
pub fn must(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip <args>`; panics with what it said when it fails.
pub fn ip(args: &[&str]) -> String {
    must(Command::new("ip").args(args))
}

/// Whether `ip <args>` succeeds.
pub fn ip_ok(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs `ip netns exec <ns> sysctl -qw <setting>`.
pub fn sysctl_in(ns: &str, setting: &str) {
    must(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", setting]));
}

/// A process a test started (a server in a namespace); killed on drop.
pub struct Spawned(pub std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What was made on the host; deleted on drop.
#[derive(Default)]
pub struct HostNet {
    pub links: Vec<String>,
    pub netns: Vec<String>,
}

impl Drop for HostNet {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
        for n in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

impl HostNet {
    /// A plain host interface to own. This kernel has no `dummy` driver,
    /// so it is one end of a veth pair whose other end (`<name>p`) stays on
    /// the host.
    pub fn stub(&mut self, name: &str) {
        ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}p"),
        ]);
        self.links.push(name.into());
    }

    /// A network namespace with `lo` up.
    pub fn netns(&mut self, name: &str) {
        ip(&["netns", "add", name]);
        self.netns.push(name.into());
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// A veth pair between two namespaces: `a_if` in `a` with `a_addr`,
    /// `b_if` in `b` with `b_addr`. Goes with the namespaces.
    pub fn veth_between(
        &mut self,
        a: &str,
        a_if: &str,
        a_addr: &str,
        b: &str,
        b_if: &str,
        b_addr: &str,
    ) {
        ip(&[
            "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
        ]);
        ip(&["-n", a, "addr", "add", a_addr, "dev", a_if]);
        ip(&["-n", b, "addr", "add", b_addr, "dev", b_if]);
        ip(&["-n", a, "link", "set", a_if, "up"]);
        ip(&["-n", b, "link", "set", b_if, "up"]);
    }

    /// A veth pair: `host` stays, `inner` goes into netns `ns` with `addr`.
    pub fn veth_into(&mut self, host: &str, inner: &str, ns: &str, addr: &str) {
        ip(&[
            "link", "add", host, "type", "veth", "peer", "name", inner, "netns", ns,
        ]);
        self.links.push(host.into());
        ip(&["-n", ns, "addr", "add", addr, "dev", inner]);
        ip(&["-n", ns, "link", "set", inner, "up"]);
        ip(&["link", "set", host, "up"]);
    }
}
