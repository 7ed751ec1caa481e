//! A recording fake of [`Runtime`] for unit tests of the daemon's
//! decisions, without root: a "container" is a `sleep` child process (so
//! exits, pidfds and kills are real), and every call is recorded.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ContainerSpec, Observed, Runtime, RuntimeError};

/// The fake; clones share their state, so a test keeps one to look in.
#[derive(Clone, Default)]
pub struct FakeRuntime {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, Container>,
    calls: Vec<String>,
    /// Each container's instance directory.
    instances: BTreeMap<String, std::path::PathBuf>,
    /// Containers whose next start ends at once, with this exit code.
    at_once: BTreeMap<String, i32>,
}

struct Container {
    hash: String,
    child: Option<Child>,
}

impl FakeRuntime {
    /// Every call so far, as "verb name".
    pub fn calls(&self) -> Vec<String> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// How many times `verb` was called for `name`.
    pub fn count(&self, verb: &str, name: &str) -> usize {
        let c = format!("{verb} {name}");
        self.calls().iter().filter(|x| **x == c).count()
    }

    pub fn clear_calls(&self) {
        self.inner.lock().unwrap().calls.clear();
    }

    /// Kills a running container's init, as a crash.
    pub fn crash(&self, name: &str) {
        let mut s = self.inner.lock().unwrap();
        let c = s.containers.get_mut(name).expect("defined");
        let child = c.child.as_mut().expect("running");
        child.kill().unwrap();
        // Dead when this returns (a watcher's pidfd still sees the exit).
        let _ = child.wait();
    }

    /// Makes the next start of `name` end before it returns, with init's
    /// exit record saying `code`, as a loaded host shows a quick exit.
    pub fn exit_at_once(&self, name: &str, code: i32) {
        self.inner
            .lock()
            .unwrap()
            .at_once
            .insert(name.to_string(), code);
    }

    fn record(&self, verb: &str, name: &str) {
        self.inner
            .lock()
            .unwrap()
            .calls
            .push(format!("{verb} {name}"));
    }
}

impl Runtime for FakeRuntime {
    fn define(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.record("define", &spec.name);
        self.inner.lock().unwrap().containers.insert(
            spec.name.clone(),
            Container {
                hash: spec.hash(),
                child: None,
            },
        );
        Ok(())
    }

    fn start(&self, spec: &ContainerSpec) -> Result<i32, RuntimeError> {
        self.record("start", &spec.name);
        // Where outpost-init reports and the daemon says "interfaces ready",
        // as the real runtime makes it.
        let err = |e: std::io::Error| RuntimeError::Container {
            name: spec.name.clone(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(spec.instance.join("status")).map_err(err)?;
        let at_once = self.inner.lock().unwrap().at_once.remove(&spec.name);
        if let Some(code) = at_once {
            std::fs::write(
                spec.instance.join("status/exit.json"),
                format!("{{\"code\":{code}}}"),
            )
            .map_err(err)?;
            self.inner
                .lock()
                .unwrap()
                .instances
                .insert(spec.name.clone(), spec.instance.clone());
            return Err(RuntimeError::ExitedAtOnce {
                name: spec.name.clone(),
            });
        }
        let child =
            Command::new("sleep")
                .arg("3600")
                .spawn()
                .map_err(|e| RuntimeError::Container {
                    name: spec.name.clone(),
                    detail: e.to_string(),
                })?;
        let pid = child.id() as i32;
        let mut s = self.inner.lock().unwrap();
        s.instances.insert(spec.name.clone(), spec.instance.clone());
        let c = s.containers.get_mut(&spec.name).expect("defined first");
        c.child = Some(child);
        Ok(pid)
    }

    fn observe(&self, name: &str) -> Result<Observed, RuntimeError> {
        let mut s = self.inner.lock().unwrap();
        let Some(c) = s.containers.get_mut(name) else {
            return Ok(Observed::Absent);
        };
        Ok(match c.child.as_mut() {
            Some(ch) => match ch.try_wait() {
                Ok(None) => Observed::Running {
                    init_pid: ch.id() as i32,
                },
                _ => Observed::Stopped,
            },
            None => Observed::Stopped,
        })
    }

    fn defined_hash(&self, name: &str) -> Option<String> {
        let s = self.inner.lock().unwrap();
        s.containers.get(name).map(|c| c.hash.clone())
    }

    fn stop(&self, name: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.record("stop", name);
        let mut s = self.inner.lock().unwrap();
        if let Some(ch) = s.containers.get_mut(name).and_then(|c| c.child.as_mut()) {
            let _ = ch.kill();
            let _ = ch.wait();
        }
        Ok(())
    }

    fn wait_stopped(&self, name: &str, _timeout: Duration) -> bool {
        let mut s = self.inner.lock().unwrap();
        if let Some(ch) = s.containers.get_mut(name).and_then(|c| c.child.as_mut()) {
            let _ = ch.wait();
        }
        true
    }

    fn destroy(&self, name: &str) -> Result<(), RuntimeError> {
        self.record("destroy", name);
        let mut s = self.inner.lock().unwrap();
        if let Some(dir) = s.instances.get(name) {
            let _ = std::fs::remove_dir_all(dir.join("status"));
        }
        if let Some(mut c) = s.containers.remove(name)
            && let Some(mut ch) = c.child.take()
        {
            let _ = ch.kill();
            let _ = ch.wait();
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .inner
            .lock()
            .unwrap()
            .containers
            .keys()
            .cloned()
            .collect())
    }
}

impl Drop for State {
    fn drop(&mut self) {
        for c in self.containers.values_mut() {
            if let Some(ch) = c.child.as_mut() {
                let _ = ch.kill();
                let _ = ch.wait();
            }
        }
    }
}
