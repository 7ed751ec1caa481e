//! `outpostctl retention status|run|history`.

use std::collections::BTreeMap;

use clap::Subcommand;

use super::{Format, Session, when};
use crate::daemon::RetentionState;
use crate::db::{RetentionOutcome, RetentionRun};
use crate::dbus::client::CallError;

#[derive(Subcommand)]
pub enum RetentionCmd {
    /// Every instrument's retention: policy, schedule, last run and its
    /// verdict.
    Status,
    /// Runs retention on one instrument now and waits for the verdict
    /// (exit 1 if it failed or left data older than the cutoff).
    Run {
        name: String,
        /// Delete what is older than this instead of its period.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
    /// The recorded runs, newest first.
    History {
        /// Only this instrument's.
        name: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

fn read<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, CallError> {
    serde_json::from_str(json)
        .map_err(|e| CallError::Failed(format!("an answer outpostctl cannot read: {e}")))
}

impl Session {
    pub(super) async fn retention(
        &self,
        cmd: RetentionCmd,
        format: Format,
    ) -> Result<(), CallError> {
        match cmd {
            RetentionCmd::Status => {
                let json = self
                    .proxy
                    .retention_status()
                    .await
                    .map_err(|e| self.err(e))?;
                if format == Format::Json {
                    println!("{json}");
                    return Ok(());
                }
                let states: BTreeMap<String, RetentionState> = read(&json)?;
                print_status(&states);
            }
            RetentionCmd::Run { name, older_than } => {
                let secs = older_than.map(|d| d.as_secs().max(1)).unwrap_or(0);
                let json = self
                    .proxy
                    .run_retention(&name, secs)
                    .await
                    .map_err(|e| self.err(e))?;
                let run: RetentionRun = read(&json)?;
                if format == Format::Json {
                    println!("{json}");
                } else {
                    println!(
                        "{name}: {} ({}; cutoff {})",
                        run.outcome,
                        run.message,
                        when(run.cutoff_ms)
                    );
                    for e in &run.errors {
                        println!("  could not remove: {e}");
                    }
                }
                if run.outcome != RetentionOutcome::Ok {
                    return Err(CallError::Unmet(format!(
                        "retention of {name} {}: {} (see: outpostctl retention history {name})",
                        run.outcome, run.message
                    )));
                }
            }
            RetentionCmd::History { name, limit } => {
                let json = self
                    .proxy
                    .retention_history(name.as_deref().unwrap_or(""), limit)
                    .await
                    .map_err(|e| self.err(e))?;
                if format == Format::Json {
                    println!("{json}");
                    return Ok(());
                }
                let runs: Vec<RetentionRun> = read(&json)?;
                println!(
                    "{:<20} {:<20} {:<8} {:<9} {:>7} {:>10}  MESSAGE",
                    "INSTRUMENT", "STARTED", "TRIGGER", "OUTCOME", "ITEMS", "BYTES"
                );
                for r in runs {
                    println!(
                        "{:<20} {:<20} {:<8} {:<9} {:>7} {:>10}  {}",
                        r.instrument,
                        when(r.started_at_ms),
                        r.trigger,
                        r.outcome.to_string(),
                        r.items,
                        r.bytes,
                        r.message
                    );
                }
            }
        }
        Ok(())
    }
}

fn print_status(states: &BTreeMap<String, RetentionState>) {
    println!(
        "{:<20} {:<12} {:<20} {:<20} {:<9}  LAST RUN",
        "INSTRUMENT", "KEEP", "LAST", "NEXT", "OUTCOME"
    );
    for (name, s) in states {
        let next = match (s.running, s.next_due_ms) {
            (true, _) => "running now".to_string(),
            (false, Some(ms)) => when(ms),
            (false, None) => "-".to_string(),
        };
        let (last, outcome, msg) = match &s.last {
            Some(r) => (
                when(r.started_at_ms),
                r.outcome.to_string(),
                r.message.clone(),
            ),
            None => ("never".to_string(), "-".to_string(), String::new()),
        };
        println!(
            "{:<20} {:<12} {:<20} {:<20} {:<9}  {}",
            name, s.policy, last, next, outcome, msg
        );
    }
}
