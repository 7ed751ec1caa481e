//! SDK errors: each names the subject, file or setting involved.

/// Any error an instrument's own code returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong talking to the platform.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error(
        "environment variable {var} {problem} (outpostd sets it; run the instrument under outpostd)"
    )]
    Env { var: &'static str, problem: String },
    #[error("cannot read the bus credentials in {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot connect to the bus at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error(
        "nats-server refused to let instrument {instrument} {op} {subject:?}: the manifest does not allow it"
    )]
    PermissionDenied {
        instrument: String,
        op: &'static str,
        subject: String,
    },
    #[error("no answer on {subject} within {timeout:?}")]
    Timeout {
        subject: String,
        timeout: std::time::Duration,
    },
    #[error("{subject}: no one is listening")]
    NoResponders { subject: String },
    #[error("event kind {kind:?} or schema {schema:?} is invalid: {problem}")]
    InvalidEvent {
        kind: String,
        schema: String,
        problem: String,
    },
    #[error("event buffer is full ({capacity} events); the event was dropped and counted")]
    BufferFull { capacity: usize },
    #[error("{subject}: {detail}")]
    Bus { subject: String, detail: String },
    #[error("{subject}: reply is not a valid envelope: {detail}")]
    BadReply { subject: String, detail: String },
    #[error("{subject}: the peer failed: {error}")]
    Remote { subject: String, error: String },
}
