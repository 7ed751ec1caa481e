//! `outpostd events`: prints the events in the sensor's `EVENTS` stream,
//! and with `--follow` keeps printing new ones.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt;
use outpost_protocol::Envelope;
use outpost_protocol::subjects::{self, EVENTS_ALL, EVENTS_STREAM, PLATFORM};

use crate::messaging::bus::connect_platform_client;
use crate::messaging::keys::Keys;
use crate::messaging::server;

/// How long the first questions to the bus are asked again.
const SETUP_RETRY: Duration = Duration::from_secs(15);

/// What to print.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    /// Keep printing new events as they arrive.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only this instrument's events (`outpostd` for the platform's).
    #[arg(long)]
    pub instrument: Option<String>,
    /// Print each envelope as one JSON line.
    #[arg(long)]
    pub json: bool,
}

fn print(msg: &[u8], json: bool) {
    match Envelope::decode(msg) {
        Ok(e) if json => println!("{}", String::from_utf8_lossy(&e.encode())),
        Ok(e) => println!(
            "{}  {:<16} {:<14} {:<28} {}",
            e.ts, e.instrument, e.kind, e.schema, e.payload
        ),
        Err(err) => println!(
            "(not a valid envelope: {err}) {}",
            String::from_utf8_lossy(msg)
        ),
    }
}

pub fn events(state_dir: &Path, args: EventsArgs) -> anyhow::Result<()> {
    let (st, _) = super::open_state(state_dir)?;
    let port = server::read_port(&st.nats()).with_context(|| {
        format!(
            "outpostd has not started its bus under {} yet (no {}/port)",
            state_dir.display(),
            st.nats().display()
        )
    })?;
    let seed = Keys::new(&st.secrets()).seed(PLATFORM)?;
    let filter = match &args.instrument {
        Some(i) => {
            if let Some(p) = outpost_protocol::names::name_problem(i) {
                bail!("--instrument {p}");
            }
            subjects::events_of(i)
        }
        None => EVENTS_ALL.to_string(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = connect_platform_client(port, &seed, "outpostd events")
            .await
            .with_context(|| format!("is outpostd running on {}?", state_dir.display()))?;
        let js = async_nats::jetstream::new(client);
        // outpostd restarts nats-server when instruments come or go; a
        // question asked meanwhile times out, so the first ones are asked
        // again for a while (the client reconnects by itself).
        let deadline = tokio::time::Instant::now() + SETUP_RETRY;
        let stream = loop {
            match js.get_stream(EVENTS_STREAM).await {
                Ok(s) => break s,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "stream {EVENTS_STREAM} is not there (has outpostd started?)"
                    )));
                }
            }
        };
        let make = |start: u64| {
            let stream = stream.clone();
            let filter = filter.clone();
            async move {
                stream
                    .create_consumer(pull::Config {
                        filter_subject: filter.clone(),
                        deliver_policy: if start == 0 {
                            DeliverPolicy::All
                        } else {
                            DeliverPolicy::ByStartSequence {
                                start_sequence: start,
                            }
                        },
                        ack_policy: AckPolicy::None,
                        inactive_threshold: Duration::from_secs(30),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("cannot read {EVENTS_STREAM} ({filter})"))
            }
        };
        let consumer = loop {
            match make(0).await {
                Ok(c) => break c,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        };
        if args.follow {
            // Keeps following across hiccups (a missed heartbeat, a
            // restarted nats-server): a new consumer resumes after the
            // last event printed.
            let mut next = 0u64;
            let mut consumer = consumer;
            loop {
                match consumer.messages().await {
                    Ok(mut msgs) => {
                        while let Some(m) = msgs.next().await {
                            match m {
                                Ok(m) => {
                                    if let Ok(info) = m.info() {
                                        next = info.stream_sequence + 1;
                                    }
                                    print(&m.payload, args.json);
                                }
                                Err(e) => {
                                    eprintln!("outpostd events: {e}; resuming");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => eprintln!("outpostd events: {e}; resuming"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                match make(next).await {
                    Ok(c) => consumer = c,
                    Err(e) => eprintln!("outpostd events: {e:#}; retrying"),
                }
            }
        }
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1000)
                .expires(Duration::from_millis(500))
                .messages()
                .await?;
            let mut got = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| anyhow::anyhow!("reading {EVENTS_STREAM}: {e}"))?;
                print(&m.payload, args.json);
                got += 1;
            }
            if got == 0 {
                return Ok(());
            }
        }
    })
}
