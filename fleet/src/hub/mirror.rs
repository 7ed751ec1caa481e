//! A local index of one KV bucket, fed by a watch on it: the hot paths
//! (every heartbeat, the offline and deadline sweeps every second, the
//! sensor list) read it instead of asking the hub key by key. The hub
//! stays the truth: a change made through the index's values is a
//! compare-and-set on the revision it shows, and a stale one fails there.
//! Another instance's writes arrive through the watch within milliseconds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::HubError;

type Map<T> = HashMap<String, (T, u64)>;

/// The current values of a bucket, with their revisions.
pub struct Mirror<T> {
    map: Arc<RwLock<Map<T>>>,
}

impl<T> Clone for Mirror<T> {
    fn clone(&self) -> Self {
        Mirror {
            map: self.map.clone(),
        }
    }
}

impl<T: DeserializeOwned + Clone + Send + Sync + 'static> Mirror<T> {
    /// Starts following `store` (bucket `name`, the last value per key,
    /// then every change) and returns once what it
    /// holds now has been read. The follower ends when the last clone of
    /// the mirror is dropped; a watch the hub ends is started again.
    pub async fn start(
        js: &jetstream::Context,
        store: kv::Store,
        name: &str,
    ) -> Result<Mirror<T>, HubError> {
        let map: Arc<RwLock<Map<T>>> = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let stored = js
            .get_stream(format!("KV_{name}"))
            .await
            .map(|s| s.cached_info().state.messages)
            .map_err(|e| HubError::Bucket {
                bucket: name.to_string(),
                why: e.to_string(),
            })?;
        tokio::spawn(follow(
            store,
            name.to_string(),
            Arc::downgrade(&map),
            stored > 0,
            ready_tx,
        ));
        // An empty bucket has nothing to read; a full one is read once.
        match tokio::time::timeout(Duration::from_secs(60), ready_rx).await {
            Ok(_) => {}
            Err(_) => warn!(bucket = name, "the index is still loading after 60 s"),
        }
        Ok(Mirror { map })
    }

    /// `key`'s value and revision.
    pub fn get(&self, key: &str) -> Option<(T, u64)> {
        self.map.read().expect("index lock").get(key).cloned()
    }

    /// Every key with its value and revision.
    pub fn all(&self) -> Vec<(String, T, u64)> {
        self.map
            .read()
            .expect("index lock")
            .iter()
            .map(|(k, (v, r))| (k.clone(), v.clone(), *r))
            .collect()
    }

    /// Takes a value this instance just wrote (so that its own next read
    /// sees it even before the watch brings it back).
    pub fn note(&self, key: &str, value: T, revision: u64) {
        let mut m = self.map.write().expect("index lock");
        if m.get(key).is_none_or(|(_, r)| *r < revision) {
            m.insert(key.to_string(), (value, revision));
        }
    }
}

async fn follow<T: DeserializeOwned>(
    store: kv::Store,
    name: String,
    map: Weak<RwLock<Map<T>>>,
    has_values: bool,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = if has_values {
        Some(ready)
    } else {
        let _ = ready.send(());
        None
    };
    let mut wait = Duration::from_millis(200);
    loop {
        let mut watch = match store.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                warn!(bucket = %name, "cannot follow the bucket ({e}); again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
                if map.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        wait = Duration::from_millis(200);
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
            let Some(m) = map.upgrade() else { return };
            let entry = match next {
                Err(_) => continue, // only to notice the mirror was dropped
                Ok(Some(Ok(e))) => e,
                Ok(Some(Err(e))) => {
                    warn!(bucket = %name, "the bucket's watch failed: {e}");
                    break;
                }
                Ok(None) => break,
            };
            {
                let mut m = m.write().expect("index lock");
                match entry.operation {
                    kv::Operation::Put => {
                        if let Ok(v) = serde_json::from_slice::<T>(&entry.value) {
                            if m.get(&entry.key).is_none_or(|(_, r)| *r <= entry.revision) {
                                m.insert(entry.key.clone(), (v, entry.revision));
                            }
                        }
                    }
                    kv::Operation::Delete | kv::Operation::Purge => {
                        m.remove(&entry.key);
                    }
                }
            }
            if entry.delta == 0
                && let Some(r) = ready.take()
            {
                info!(bucket = %name, "index loaded");
                let _ = r.send(());
            }
        }
        tokio::time::sleep(wait).await;
    }
}
