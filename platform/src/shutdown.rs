//! One shutdown signal for every part of `outpostd run` (the daemon, the
//! D-Bus server, the metrics server, later the fleet link), mini-redis
//! style: whoever holds a clone can trigger it or wait for it.

use std::sync::Arc;

use tokio::sync::watch;

/// A clonable shutdown token.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            tx: Arc::new(tx),
            rx,
        }
    }

    /// Asks everyone holding a clone to stop.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once [`Shutdown::trigger`] was called (at once if it was).
    pub async fn triggered(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|t| *t).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_hears_the_trigger() {
        let s = Shutdown::new();
        let a = s.clone();
        let waiter = tokio::spawn(async move { a.triggered().await });
        assert!(!s.is_triggered());
        s.trigger();
        waiter.await.unwrap();
        let late = s.clone();
        late.triggered().await;
        assert!(late.is_triggered());
    }
}
