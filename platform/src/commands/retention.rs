//! `outpostd retention`: asks a running instrument to delete what is older
//! than a period (by default its manifest's), and prints what it removed.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use outpost_protocol::messages::{RetentionReply, RetentionRequest, schema};
use outpost_protocol::subjects::{self, PLATFORM};

use crate::images::ImageStore;
use crate::messaging::bus::Bus;
use crate::messaging::keys::Keys;
use crate::messaging::server;

/// Options of `outpostd retention`.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// The instrument.
    pub instrument: String,
    /// Delete what is older than this (default: the manifest's period).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
}

pub fn retention(state_dir: &Path, args: RetentionArgs) -> anyhow::Result<()> {
    let (st, db) = super::open_state(state_dir)?;
    let name = &args.instrument;
    let status = db
        .status(name)?
        .with_context(|| format!("instrument {name} does not exist (see: outpostd status)"))?;
    let (_, manifest) = ImageStore::new(&st)
        .get(&db, &status.image, &status.version)?
        .with_context(|| {
            format!(
                "image {}:{} of {name} is not imported",
                status.image, status.version
            )
        })?;
    if !manifest.retention.supported {
        bail!(
            "instrument {name} does not handle retention (image {}:{} says retention.supported = false)",
            status.image,
            status.version
        );
    }
    let period = match (args.older_than, manifest.retention.default_period) {
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) => bail!(
            "give --older-than: image {} has no default period",
            status.image
        ),
    };
    let cutoff = SystemTime::now() - period;
    let port = server::read_port(&st.nats()).context("outpostd has not started its bus yet")?;
    let seed = Keys::new(&st.secrets()).seed(PLATFORM)?;
    let sensor = db
        .latest_desired()?
        .map(|(_, s)| s.sensor.name)
        .unwrap_or_else(|| "sensor".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply: RetentionReply = rt.block_on(async {
        let bus = Bus::connect(port, seed, &sensor).await?;
        let r = bus
            .request(
                &subjects::retention(name),
                "retention",
                schema::RETENTION_REQUEST,
                &RetentionRequest {
                    cutoff: humantime::format_rfc3339_millis(cutoff).to_string(),
                },
                schema::RETENTION_REPLY,
                Duration::from_secs(60),
            )
            .await?;
        anyhow::Ok(r)
    })?;
    println!(
        "{name}: removed {} items, {} bytes older than {}",
        reply.items,
        reply.bytes,
        humantime::format_rfc3339_seconds(cutoff)
    );
    for e in &reply.errors {
        println!("  could not remove: {e}");
    }
    Ok(())
}
