//! The probe process: started with its stdout read line by line, stopped
//! on request.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use outpost_protocol::beacon::MAX_LINE;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// A line the probe printed, or why it ended, tagged with its
/// generation. Exits go on an unbounded channel of their own, so that a
/// full line channel can never hold up a stop.
pub(crate) type Line = (u64, String);
pub(crate) type Exit = (u64, String);

/// The probe process the beacon runs.
pub(crate) struct Running {
    pub(crate) generation: u64,
    pub(crate) started: Instant,
    pub(crate) kill: Option<oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<()>,
}

impl Running {
    pub(crate) async fn stop(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        let _ = (&mut self.done).await;
    }
}

/// Starts the probe at `binary` with the probe config at `config`; its
/// lines go to `lines` and its end to `exits`, tagged with `generation`.
pub(crate) fn spawn_probe(
    generation: u64,
    binary: &Path,
    config: &Path,
    lines: mpsc::Sender<Line>,
    exits: mpsc::UnboundedSender<Exit>,
) -> std::io::Result<(Running, Option<u32>)> {
    let mut child = tokio::process::Command::new(binary)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        let read = async move {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                // A line is read up to MAX_LINE + 1 bytes; the rest of a
                // longer one is skipped, so a runaway probe cannot fill
                // the beacon's memory.
                match (&mut r)
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut buf)
                    .await
                {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
                    let mut skip = Vec::new();
                    loop {
                        skip.clear();
                        match (&mut r).take(64 * 1024).read_until(b'\n', &mut skip).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) if skip.last() == Some(&b'\n') => break,
                            Ok(_) => {}
                        }
                    }
                }
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                let line = String::from_utf8_lossy(&buf).into_owned();
                if lines.send((generation, line)).await.is_err() {
                    return;
                }
            }
        };
        // Its output ends when it exits (or closes stdout); a stop asked
        // for meanwhile wins.
        let ended = tokio::select! {
            _ = &mut kill_rx => None,
            s = async {
                read.await;
                child.wait().await
            } => Some(s),
        };
        let why = match ended {
            None => {
                let _ = child.kill().await;
                "stopped by the beacon".to_string()
            }
            Some(Ok(s)) => format!("exited ({s})"),
            Some(Err(e)) => format!("cannot be waited for: {e}"),
        };
        let _ = exits.send((generation, why));
    });
    Ok((
        Running {
            generation,
            started: Instant::now(),
            kill: Some(kill_tx),
            done,
        },
        pid,
    ))
}
