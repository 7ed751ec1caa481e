//! One action with the instrument's identity, its outcome printed as
//! `{"ok": bool, "denied": bool, "error": "..."}`; exit status 0 when it
//! worked, 3 when nats-server refused it, 1 otherwise.

use std::time::Duration;

use bytes::Bytes;
use instrument_sdk::SdkError;
use instrument_sdk::env::Env;
use serde_json::json;

/// The instrument's environment: ours if set, else PID 1's (the probe is
/// started by `lxc-attach`, which does not pass the container's).
fn environment() -> Result<Env, SdkError> {
    if std::env::var("OUTPOST_INSTRUMENT").is_ok() {
        return Env::from_environment();
    }
    let raw = std::fs::read("/proc/1/environ").unwrap_or_default();
    let vars: std::collections::HashMap<String, String> = raw
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let get = |k: &'static str| {
        vars.get(k).cloned().ok_or(SdkError::Env {
            var: k,
            problem: "is not set for PID 1 either".into(),
        })
    };
    Ok(Env {
        instrument: get("OUTPOST_INSTRUMENT")?,
        sensor: get("OUTPOST_SENSOR")?,
        nats_url: get("OUTPOST_NATS_URL").unwrap_or(instrument_sdk::env::DEFAULT_NATS_URL.into()),
        nkey_file: get("OUTPOST_NATS_NKEY")
            .unwrap_or(instrument_sdk::env::DEFAULT_NKEY_FILE.into())
            .into(),
        event_buffer: 1000,
        persistent_dir: instrument_sdk::storage::PERSISTENT.into(),
        transient_dir: instrument_sdk::storage::TRANSIENT.into(),
    })
}

fn outcome(r: Result<String, SdkError>) -> i32 {
    match r {
        Ok(detail) => {
            println!("{}", json!({"ok": true, "denied": false, "detail": detail}));
            0
        }
        Err(e) => {
            let denied = matches!(e, SdkError::PermissionDenied { .. });
            println!(
                "{}",
                json!({"ok": false, "denied": denied, "error": e.to_string()})
            );
            if denied { 3 } else { 1 }
        }
    }
}

pub fn run(args: &[String]) -> i32 {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(code) = crate::abuse::run(&a) {
        return code;
    }
    if let ["connect", addr] = a.as_slice() {
        let r = match addr.parse::<std::net::SocketAddr>() {
            Ok(sa) => std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2))
                .map(|_| format!("connected to {addr}"))
                .map_err(|e| SdkError::Bus {
                    subject: addr.to_string(),
                    detail: e.to_string(),
                }),
            Err(e) => Err(SdkError::Bus {
                subject: addr.to_string(),
                detail: e.to_string(),
            }),
        };
        return outcome(r);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let env = match environment() {
            Ok(e) => e,
            Err(e) => return outcome(Err(e)),
        };
        let ctx = match instrument_sdk::Context::connect(env).await {
            Ok(c) => c,
            Err(e) => return outcome(Err(e)),
        };
        // Wait for the connection (it is made in the background).
        for _ in 0..100 {
            if ctx.is_connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = match a.as_slice() {
            ["nats", "publish", subject] => ctx
                .publish_raw(subject, Bytes::from_static(b"{}"))
                .await
                .map(|_| format!("published to {subject}")),
            ["nats", "subscribe", subject] => ctx
                .subscribe_raw(subject)
                .await
                .map(|_| format!("subscribed to {subject}")),
            ["nats", "request", subject] => ctx
                .request_raw(subject, Bytes::from_static(b"{}"), Duration::from_secs(2))
                .await
                .map(|m| String::from_utf8_lossy(&m.payload).into_owned()),
            ["nats", "event", kind] => match ctx.publish(kind, "probe.event/1", &json!({"from": "probe"})) {
                Ok(()) if ctx.flush_events(Duration::from_secs(10)).await => Ok(format!("event {kind} stored")),
                Ok(()) => Err(SdkError::Timeout {
                    subject: format!("event {kind}"),
                    timeout: Duration::from_secs(10),
                }),
                Err(e) => Err(e),
            },
            _ => {
                eprintln!("usage: outpost-probe [nats publish|subscribe|request SUBJECT | nats event KIND | connect HOST:PORT | userns | connect-many N SECONDS]");
                return 2;
            }
        };
        outcome(r)
    })
}
