//! The event buffer: bounded, kept while the bus is away, and stored
//! exactly once.
//!
//! [`Publisher::try_publish`] only queues (it never waits on the network).
//! A drain task publishes to JetStream with up to [`WINDOW`] events in
//! flight and waits for each acknowledgement; a failed or timed-out
//! acknowledgement puts the event (and those sent after it) back at the
//! front, to be sent again after a back-off. Every event carries its
//! envelope id as `Nats-Msg-Id`, so the `EVENTS` stream stores a re-sent
//! event once. When the buffer is full, the new event is dropped and
//! counted: the count is in [`EventStats`], and in every health reply.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::error::SdkError;

/// Events in flight (sent, not yet acknowledged) at most.
pub const WINDOW: usize = 1024;

/// One encoded event.
#[derive(Debug, Clone)]
pub struct Item {
    pub subject: String,
    /// The envelope id, used as the JetStream message id.
    pub id: String,
    pub body: Bytes,
}

/// Counters of the event buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EventStats {
    /// In the buffer or in flight.
    pub queued: u64,
    /// Stored by the bus.
    pub published: u64,
    /// Refused because the buffer was full.
    pub dropped: u64,
    /// Sends repeated after a failure or a missing acknowledgement.
    pub resent: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    published: AtomicU64,
    dropped: AtomicU64,
    resent: AtomicU64,
}

/// Handle to the buffer.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Item>,
    counters: Arc<Counters>,
    capacity: usize,
}

impl Publisher {
    /// Starts the drain task on the current tokio runtime.
    pub fn start(js: jetstream::Context, capacity: usize) -> Publisher {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        tokio::spawn(drain(js, rx, counters.clone()));
        Publisher {
            tx,
            counters,
            capacity,
        }
    }

    /// Queues an event, or drops and counts it when the buffer is full.
    pub fn try_publish(&self, item: Item) -> Result<(), SdkError> {
        match self.tx.try_send(item) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                Err(SdkError::BufferFull {
                    capacity: self.capacity,
                })
            }
        }
    }

    pub fn stats(&self) -> EventStats {
        EventStats {
            queued: self.counters.queued.load(Ordering::Relaxed),
            published: self.counters.published.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            resent: self.counters.resent.load(Ordering::Relaxed),
        }
    }

    /// Waits until every queued event is stored, up to `timeout`. Returns
    /// whether the buffer is empty.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.counters.queued.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

async fn send(js: &jetstream::Context, item: &Item) -> Result<PublishAckFuture, String> {
    js.send_publish(
        item.subject.clone(),
        PublishMessage::build()
            .payload(item.body.clone())
            .message_id(&item.id),
    )
    .await
    .map_err(|e| e.to_string())
}

async fn drain(js: jetstream::Context, mut rx: mpsc::Receiver<Item>, c: Arc<Counters>) {
    let mut retry: VecDeque<Item> = VecDeque::new();
    let mut inflight: VecDeque<(Item, PublishAckFuture)> = VecDeque::new();
    let mut backoff = Duration::from_millis(50);
    let mut closed = false;
    loop {
        let mut send_failed = false;
        while inflight.len() < WINDOW {
            let next = if let Some(i) = retry.pop_front() {
                Some(i)
            } else if inflight.is_empty() && !closed {
                let got = rx.recv().await;
                closed = got.is_none();
                got
            } else {
                rx.try_recv().ok()
            };
            let Some(item) = next else { break };
            match send(&js, &item).await {
                Ok(ack) => inflight.push_back((item, ack)),
                Err(e) => {
                    debug!(subject = %item.subject, "event not sent: {e}; will retry");
                    retry.push_front(item);
                    send_failed = true;
                    break;
                }
            }
        }
        if inflight.is_empty() {
            if closed && retry.is_empty() {
                return;
            }
            if send_failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            continue;
        }
        let (item, ack) = inflight.pop_front().expect("not empty");
        match ack.await {
            Ok(_) => {
                c.published.fetch_add(1, Ordering::Relaxed);
                c.queued.fetch_sub(1, Ordering::Relaxed);
                backoff = Duration::from_millis(50);
            }
            Err(e) => {
                warn!(subject = %item.subject, "event not acknowledged ({e}); sending it again");
                // Keep the order: this one, then the others in flight.
                let mut again: VecDeque<Item> =
                    VecDeque::with_capacity(inflight.len() + 1 + retry.len());
                again.push_back(item);
                again.extend(inflight.drain(..).map(|(i, _)| i));
                c.resent.fetch_add(again.len() as u64, Ordering::Relaxed);
                again.extend(retry.drain(..));
                retry = again;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}
