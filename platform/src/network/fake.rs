//! A recording fake [`Binder`] for the daemon's unit tests: no netlink,
//! every call recorded, and an apply that fails on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use outpost_protocol::bindings::Binding;

use super::nl::NlResult;
use super::{Binder, NetError, Record};

/// The fake; clones share their state.
#[derive(Clone, Default)]
pub struct FakeBinder {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    calls: Vec<String>,
    /// Applies for these instruments fail.
    failing: BTreeSet<String>,
    /// Bound now, by instrument.
    bound: BTreeSet<String>,
}

impl FakeBinder {
    /// Every call so far, as "verb instrument[/role]".
    pub fn calls(&self) -> Vec<String> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Makes the apply of `instrument`'s bindings fail from now on.
    pub fn fail_apply(&self, instrument: &str) {
        self.inner.lock().unwrap().failing.insert(instrument.into());
    }

    /// Whether `instrument` has bindings in place.
    pub fn is_bound(&self, instrument: &str) -> bool {
        self.inner.lock().unwrap().bound.contains(instrument)
    }
}

impl Binder for FakeBinder {
    fn preflight<'a>(
        &'a self,
        instrument: &'a str,
        bindings: &'a BTreeMap<String, Binding>,
        _others: &'a [Record],
    ) -> BoxFuture<'a, NlResult<Vec<Record>>> {
        Box::pin(async move {
            self.inner
                .lock()
                .unwrap()
                .calls
                .push(format!("preflight {instrument}"));
            Ok(bindings
                .iter()
                .map(|(role, b)| Record::new(instrument, role, b))
                .collect())
        })
    }

    fn apply<'a>(&'a self, _pid: i32, records: &'a [Record]) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(async move {
            let mut s = self.inner.lock().unwrap();
            let Some(first) = records.first() else {
                return Ok(());
            };
            let name = first.instrument.clone();
            s.calls.push(format!("apply {name}"));
            // Half done, as a real failure may leave it.
            s.bound.insert(name.clone());
            if s.failing.contains(&name) {
                return Err(NetError::Refused(format!(
                    "instrument {name}, role {}: cannot move it in (fake failure)",
                    first.role
                )));
            }
            Ok(())
        })
    }

    fn undo<'a>(&'a self, _pid: Option<i32>, r: &'a Record) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(async move {
            let mut s = self.inner.lock().unwrap();
            s.calls.push(format!("undo {}/{}", r.instrument, r.role));
            s.bound.remove(&r.instrument);
            Ok(())
        })
    }
}
