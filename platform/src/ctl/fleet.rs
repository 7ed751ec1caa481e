//! `outpostctl fleet enroll|status`.

use clap::Subcommand;

use super::{Format, Session};
use crate::dbus::client::{CallError, FleetProxy};
use crate::fleet::{LinkConfig, LinkStatus};

#[derive(Subcommand)]
pub enum FleetCmd {
    /// Enrolls this sensor in a fleet: makes its own key pair, trades the
    /// one-time token for hub credentials, and marks the sensor
    /// fleet-managed.
    Enroll {
        /// The fleet's API, e.g. https://fleet.example:8443.
        url: String,
        /// The one-time token from `outpost-fleet sensor add`.
        #[arg(long)]
        token: String,
        /// The fleet's certificate pin from `outpost-fleet sensor add`
        /// (sha256:…).
        #[arg(long)]
        fingerprint: String,
    },
    /// The link to the fleet: state, heartbeats, backlog.
    Status,
    /// Forwards the local events to the fleet again, from a local
    /// sequence on (the fleet keeps each event once).
    Resend {
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
}

impl Session {
    async fn fleet_proxy(&self) -> Result<FleetProxy<'static>, CallError> {
        FleetProxy::builder(self.proxy.inner().connection())
            .build()
            .await
            .map_err(|e| self.err(e))
    }

    pub(super) async fn fleet(&self, cmd: FleetCmd, format: Format) -> Result<(), CallError> {
        let p = self.fleet_proxy().await?;
        match cmd {
            FleetCmd::Enroll {
                url,
                token,
                fingerprint,
            } => {
                let json = p
                    .enroll(&url, &token, &fingerprint)
                    .await
                    .map_err(|e| self.err(e))?;
                if format == Format::Json {
                    println!("{json}");
                    return Ok(());
                }
                let c: LinkConfig = serde_json::from_str(&json).map_err(|e| {
                    CallError::Failed(format!("an answer outpostctl cannot read: {e}"))
                })?;
                println!(
                    "enrolled as {} at {}; hub {}; this sensor is now fleet-managed",
                    c.sensor,
                    c.fleet_url,
                    c.hub_urls.join(", ")
                );
            }
            FleetCmd::Resend { from } => {
                p.resend(from).await.map_err(|e| self.err(e))?;
                println!("events from local sequence {from} on are being forwarded again");
            }
            FleetCmd::Status => {
                let json = p.status().await.map_err(|e| self.err(e))?;
                if format == Format::Json {
                    println!("{json}");
                    return Ok(());
                }
                let s: LinkStatus = serde_json::from_str(&json).map_err(|e| {
                    CallError::Failed(format!("an answer outpostctl cannot read: {e}"))
                })?;
                println!("{}", describe(&s));
            }
        }
        Ok(())
    }
}

/// The link in one line, for `fleet status` and `status`.
pub(crate) fn describe(s: &LinkStatus) -> String {
    use outpost_protocol::fleet::LinkState;
    if s.state == LinkState::None {
        return "fleet: not enrolled".into();
    }
    let since = s
        .since_ms
        .map(|t| format!(" for {}s", (crate::db::now_ms() - t).max(0) / 1000))
        .unwrap_or_default();
    let b = &s.backlog;
    let oldest = b
        .oldest_age_s
        .map(|a| format!(", oldest {a}s"))
        .unwrap_or_default();
    format!(
        "fleet link: {}{since} ({}) as {} at {}; heartbeats sent {}; backlog {} events, {} bytes{oldest}, {} dropped",
        s.state,
        s.detail,
        s.sensor.as_deref().unwrap_or("?"),
        s.fleet_url.as_deref().unwrap_or("?"),
        s.heartbeats_sent,
        b.events,
        b.bytes,
        b.dropped
    )
}
