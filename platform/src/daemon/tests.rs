//! The daemon's decisions on a recording fake runtime, without root and
//! without a bus: adopt or recreate, the restart policy, what a disabled
//! or refused instrument gets, which change wins. The same decisions on
//! real containers are in the end-to-end tests (`tests/tests/`).

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::*;
use crate::db::{ImageRecord, Origin, Source};
use crate::messaging::fake::{Behaviour, FakeBus};
use crate::network::fake::FakeBinder;
use crate::runtime::fake::FakeRuntime;

/// The example image with one bridge role.
const NET_MANIFEST: &str = r#"
name = "net-bridge"
version = "0.1.0"
entrypoint = ["/usr/bin/example"]
network = "active"
[[interfaces]]
role = "seg0"
type = "bridge"
capabilities = ["rx", "tx"]
"#;

const MANIFEST: &str = r#"
name = "example"
version = "0.1.0"
entrypoint = ["/usr/bin/example"]
[health]
interval = "2s"
timeout = "1s"
[retention]
supported = true
default-period = "7d"
timeout = "1s"
[config.schema]
type = "object"
properties.greeting = { type = "string" }
"#;

fn instrument(name: &str, extra: &str) -> String {
    format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\n{extra}\n"
    )
}

fn write_sensor(dir: &Path, body: &str) {
    std::fs::write(
        dir.join("sensor.toml"),
        format!("[sensor]\nname = \"unit\"\n\n{body}"),
    )
    .unwrap();
}

/// A daemon on `dir` with the fakes, the example images "imported" and the
/// sensor file at `dir/sensor.toml`, after its start-up.
fn daemon(dir: &Path, rt: &FakeRuntime) -> (Daemon<FakeRuntime>, mpsc::Receiver<Command>) {
    daemon_with(dir, rt, &FakeBinder::default())
}

fn daemon_with(
    dir: &Path,
    rt: &FakeRuntime,
    binder: &FakeBinder,
) -> (Daemon<FakeRuntime>, mpsc::Receiver<Command>) {
    daemon_full(dir, rt, binder, None)
}

/// With a fake bus too: instruments answer health, config and retention
/// as `bus` says.
fn daemon_on_bus(
    dir: &Path,
    rt: &FakeRuntime,
    bus: &FakeBus,
) -> (Daemon<FakeRuntime>, mpsc::Receiver<Command>) {
    daemon_full(dir, rt, &FakeBinder::default(), Some(bus))
}

fn daemon_full(
    dir: &Path,
    rt: &FakeRuntime,
    binder: &FakeBinder,
    bus: Option<&FakeBus>,
) -> (Daemon<FakeRuntime>, mpsc::Receiver<Command>) {
    let state = crate::paths::StateDir::new(dir.join("state"));
    crate::paths::create_private_dir(state.root()).unwrap();
    let db = Db::open(&state.db()).unwrap();
    for (name, manifest) in [("example", MANIFEST), ("net-bridge", NET_MANIFEST)] {
        if db.image(name, "0.1.0").unwrap().is_none() {
            db.insert_image(&ImageRecord {
                name: name.into(),
                version: "0.1.0".into(),
                sha256: "0".repeat(64),
                manifest: manifest.into(),
                imported_at_ms: 0,
                bytes: 0,
            })
            .unwrap();
        }
    }
    let cfg = DaemonConfig {
        state,
        sensor_file: Some(dir.join("sensor.toml")),
        init: "/bin/true".into(),
        stop_on_exit: false,
        reconcile_every: Duration::from_millis(100),
        stop_grace: Duration::from_secs(1),
        console_log_size: 1 << 20,
        nats_server: None,
        nats_port: 0,
        events: crate::messaging::bus::EventsLimits {
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(3600),
        },
        max_bus_connections: 4,
        id_range_start: DEFAULT_ID_RANGE_START,
        privileged: false,
    };
    let control = bus.map(|b| {
        std::sync::Arc::new(b.clone()) as std::sync::Arc<dyn crate::messaging::control::BusControl>
    });
    let parts = Parts {
        binder: std::sync::Arc::new(binder.clone()),
        control,
        ..Parts::default()
    };
    let mut d = Daemon::compose(cfg, rt.clone(), parts).unwrap();
    let rx = d.rx.take().unwrap();
    d.startup().unwrap();
    (d, rx)
}

fn state_of(d: &Daemon<FakeRuntime>, name: &str) -> (State, String) {
    let s = &d.instances[name].status;
    (s.state, s.detail.clone())
}

/// Reconciles, then runs the loop until no job (start, stop) is under way.
async fn settle(d: &mut Daemon<FakeRuntime>, rx: &mut mpsc::Receiver<Command>) {
    d.reconcile().await;
    pump(d, rx, "every job done", |d| {
        d.instances.values().all(|i| i.busy.is_none())
    })
    .await;
}

/// Runs the actor's loop by hand until `done` holds (commands, then a
/// reconcile when the command asks for one, as `run` does).
async fn pump(
    d: &mut Daemon<FakeRuntime>,
    rx: &mut mpsc::Receiver<Command>,
    what: &str,
    done: impl Fn(&Daemon<FakeRuntime>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(d) {
        assert!(Instant::now() < deadline, "never saw: {what}");
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(cmd)) => {
                if d.on_command(cmd).await {
                    d.reconcile().await;
                }
            }
            Ok(None) => panic!("command channel closed"),
            Err(_) => d.reconcile().await,
        }
    }
}

#[tokio::test]
async fn an_unchanged_container_is_adopted_and_a_changed_one_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    write_sensor(dir.path(), &instrument("a", ""));
    let (mut d, mut rx) = daemon(dir.path(), &rt);
    settle(&mut d, &mut rx).await;
    assert_eq!(rt.calls(), ["define a", "start a"]);
    assert_eq!(state_of(&d, "a").0, State::Running);
    // outpostd dies (kill -9): the container runs on.
    drop(d);

    rt.clear_calls();
    let (mut d, mut rx) = daemon(dir.path(), &rt);
    settle(&mut d, &mut rx).await;
    assert!(rt.calls().is_empty(), "adopted as it is: {:?}", rt.calls());
    let (st, detail) = state_of(&d, "a");
    assert_eq!(st, State::Running);
    assert!(detail.contains("adopted"), "{detail}");

    // A new limit changes the container: stopped (as a job), removed,
    // defined and started again.
    write_sensor(
        dir.path(),
        &instrument("a", "limits = { memory = \"48MiB\" }"),
    );
    d.reload();
    d.reconcile().await;
    assert_eq!(state_of(&d, "a").0, State::Stopping, "the stop is a job");
    pump(&mut d, &mut rx, "a recreated", |d| {
        d.instances["a"].status.state == State::Running
    })
    .await;
    assert_eq!(
        rt.calls(),
        ["stop a", "destroy a", "define a", "start a"],
        "recreated once"
    );
}

#[tokio::test]
async fn a_crash_restarts_on_failure_and_stays_down_under_never() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    let fast = "backoff = { initial = \"100ms\", max = \"1s\" }";
    write_sensor(
        dir.path(),
        &format!(
            "{}{}",
            instrument("a", &format!("restart = \"on-failure\"\n{fast}")),
            instrument("b", &format!("restart = \"never\"\n{fast}")),
        ),
    );
    let (mut d, mut rx) = daemon(dir.path(), &rt);
    settle(&mut d, &mut rx).await;
    rt.crash("a");
    rt.crash("b");
    pump(&mut d, &mut rx, "a started again, b left down", |d| {
        rt.count("start", "a") == 2
            && d.instances["a"].status.state == State::Running
            && d.instances["b"].status.state == State::Crashed
    })
    .await;
    assert_eq!(rt.count("start", "b"), 1, "never means never");
    let (_, detail) = state_of(&d, "b");
    assert!(
        detail.contains("restart policy never leaves it down"),
        "{detail}"
    );
    let a = &d.instances["a"].status;
    assert_eq!(a.restarts, 1);
    assert!(
        a.last_exit
            .as_ref()
            .unwrap()
            .detail
            .contains("killed from outside"),
        "{:?}",
        a.last_exit
    );
    // Reconciling again changes nothing: b stays down.
    d.reconcile().await;
    assert_eq!(rt.count("start", "b"), 1);
}

#[tokio::test]
async fn an_exit_before_the_start_returns_is_an_exit_for_the_policy_not_a_failed_start() {
    // On a loaded host a quick job can end before liblxc's start returns.
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    let fast = "backoff = { initial = \"100ms\", max = \"1s\" }";
    write_sensor(
        dir.path(),
        &format!(
            "{}{}",
            instrument("clean", &format!("restart = \"on-failure\"\n{fast}")),
            instrument("bad", &format!("restart = \"on-failure\"\n{fast}")),
        ),
    );
    rt.exit_at_once("clean", 0);
    rt.exit_at_once("bad", 3);
    let (mut d, mut rx) = daemon(dir.path(), &rt);
    settle(&mut d, &mut rx).await;
    pump(&mut d, &mut rx, "clean exited, bad running again", |d| {
        d.instances["clean"].status.state == State::Exited
            && d.instances["bad"].status.state == State::Running
    })
    .await;
    let clean = &d.instances["clean"].status;
    assert_eq!(clean.last_exit.as_ref().unwrap().code, Some(0));
    assert_eq!(clean.restarts, 0, "a clean exit is not restarted");
    assert_eq!(rt.count("start", "clean"), 1);
    assert!(
        clean
            .detail
            .contains("restart policy on-failure leaves it down"),
        "{}",
        clean.detail
    );
    let bad = &d.instances["bad"].status;
    assert_eq!(bad.last_exit.as_ref().unwrap().code, Some(3));
    assert_eq!(bad.restarts, 1);
    assert_eq!(rt.count("start", "bad"), 2);
}

#[tokio::test]
async fn a_disabled_instrument_is_stopped_and_not_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    write_sensor(dir.path(), &instrument("a", ""));
    let (mut d, mut rx) = daemon(dir.path(), &rt);
    settle(&mut d, &mut rx).await;
    let v = d
        .apply(
            Change::Enabled {
                instrument: "a".into(),
                on: false,
            },
            Origin::new(Source::Local, "uid 0", "test"),
            false,
        )
        .unwrap();
    assert!(v.changed);
    d.reconcile().await;
    pump(&mut d, &mut rx, "a stopped", |d| {
        d.instances["a"].status.state == State::Stopped
    })
    .await;
    for _ in 0..3 {
        d.reconcile().await;
    }
    assert_eq!(rt.count("start", "a"), 1, "{:?}", rt.calls());
    assert_eq!(
        rt.list().unwrap(),
        Vec::<String>::new(),
        "nothing left defined"
    );
}

#[tokio::test]
async fn an_operators_restart_is_answered_once_it_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    write_sensor(dir.path(), &instrument("a", ""));
    let (mut d, mut rx) = daemon(dir.path(), &rt);
    settle(&mut d, &mut rx).await;
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    d.restart("a", reply).await;
    assert!(answer.try_recv().is_err(), "not before it ran again");
    pump(&mut d, &mut rx, "a running again", |d| {
        d.instances["a"].status.state == State::Running
    })
    .await;
    answer.await.unwrap().unwrap();
    assert_eq!(
        rt.calls(),
        [
            "define a",
            "start a",
            "stop a",
            "destroy a",
            "define a",
            "start a"
        ]
    );
    let (reply, answer) = tokio::sync::oneshot::channel();
    d.restart("nope", reply).await;
    let err = answer.await.unwrap().unwrap_err();
    assert!(matches!(err, ApplyError::UnknownInstrument { .. }), "{err}");
}

#[tokio::test]
async fn a_refused_change_leaves_the_running_instrument_alone() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    write_sensor(dir.path(), &instrument("a", ""));
    let (mut d, mut rx) = daemon(dir.path(), &rt);
    settle(&mut d, &mut rx).await;
    let err = d
        .apply(
            Change::Config {
                instrument: "a".into(),
                body: serde_json::json!({ "greeting": 5 }),
            },
            Origin::new(Source::Local, "uid 0", "test"),
            false,
        )
        .unwrap_err();
    assert!(matches!(err, ApplyError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("greeting"), "{err}");
    d.reconcile().await;
    assert_eq!(rt.calls(), ["define a", "start a"], "untouched");
    assert_eq!(d.desired.as_ref().unwrap().0, 1, "nothing stored");
}

#[tokio::test]
async fn a_local_change_survives_a_restart_and_the_fleet_refuses_it_without_override() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    write_sensor(dir.path(), &instrument("a", ""));
    let local = |reason: &str| Origin::new(Source::Local, "uid 0 via :1.7", reason);
    let greet = |g: &str| Change::Config {
        instrument: "a".into(),
        body: serde_json::json!({ "greeting": g }),
    };
    {
        let (mut d, _rx) = daemon(dir.path(), &rt);
        let v = d.apply(greet("local"), local("try"), false).unwrap();
        assert_eq!(v.version, 2);
    }
    // The file did not change: the local version stays the truth.
    let (d, _rx) = daemon(dir.path(), &rt);
    let (v, spec) = d.desired.clone().unwrap();
    assert_eq!(v, 2);
    assert_eq!(spec.instruments[0].config["greeting"], "local");
    drop(d);

    // The file changed while outpostd was down: it wins at start-up.
    write_sensor(
        dir.path(),
        &instrument("a", "[instrument.config]\ngreeting = \"file\""),
    );
    let (mut d, _rx) = daemon(dir.path(), &rt);
    let (v, spec) = d.desired.clone().unwrap();
    assert_eq!(v, 3);
    assert_eq!(spec.instruments[0].config["greeting"], "file");

    // Fleet-managed: local changes only with an override, kept as drift.
    d.db.set_fleet_managed(true).unwrap();
    let err = d.apply(greet("sneaky"), local("try"), false).unwrap_err();
    assert!(matches!(err, ApplyError::FleetManaged(_)), "{err}");
    let v = d.apply(greet("urgent"), local("incident 7"), true).unwrap();
    let hist = d.db.desired_history(10).unwrap();
    let last = hist.iter().find(|h| h.version == v.version).unwrap();
    assert!(last.drift, "{last:?}");
    assert_eq!(last.reason, "incident 7");
}

fn bridged(name: &str) -> String {
    format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"net-bridge\"\nversion = \"0.1.0\"\n\
         backoff = {{ initial = \"1h\", max = \"1h\" }}\n\
         [instrument.interfaces.seg0]\ntype = \"bridge\"\nbridge = \"br-unit\"\ncreate = true\n"
    )
}

#[tokio::test]
async fn a_start_whose_interfaces_cannot_be_bound_is_undone_and_counts_as_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    let net = FakeBinder::default();
    net.fail_apply("n");
    write_sensor(dir.path(), &bridged("n"));
    let (mut d, mut rx) = daemon_with(dir.path(), &rt, &net);
    settle(&mut d, &mut rx).await;
    assert_eq!(net.calls(), ["preflight n", "apply n", "undo n/seg0"]);
    assert!(!net.is_bound("n"), "the half-made binding was undone");
    assert!(d.binding_records(Some("n")).is_empty(), "and forgotten");
    assert!(
        rt.list().unwrap().is_empty(),
        "no container left: {:?}",
        rt.calls()
    );
    let (st, detail) = state_of(&d, "n");
    assert_eq!(st, State::Backoff, "{detail}");
    assert!(detail.contains("fake failure"), "{detail}");
    assert_eq!(d.instances["n"].status.failures, 1);
}

#[tokio::test]
async fn bindings_a_crash_left_behind_are_undone_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    let net = FakeBinder::default();
    write_sensor(dir.path(), &bridged("n"));
    let (mut d, mut rx) = daemon_with(dir.path(), &rt, &net);
    settle(&mut d, &mut rx).await;
    assert!(net.is_bound("n"));
    assert_eq!(d.binding_records(Some("n")).len(), 1);
    // outpostd dies, and so does the instrument while it is down.
    drop(d);
    rt.crash("n");
    let (mut d, _rx) = daemon_with(dir.path(), &rt, &net);
    d.release_orphaned_bindings().await;
    assert!(!net.is_bound("n"));
    assert!(d.binding_records(None).is_empty());
    assert_eq!(net.calls().last().unwrap(), "undo n/seg0");
}

#[tokio::test]
async fn config_is_delivered_and_a_rejected_version_leaves_the_applied_one() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    let bus = FakeBus::default();
    write_sensor(
        dir.path(),
        &instrument("a", "[instrument.config]\ngreeting = \"hi\""),
    );
    let (mut d, mut rx) = daemon_on_bus(dir.path(), &rt, &bus);
    settle(&mut d, &mut rx).await;
    pump(&mut d, &mut rx, "config 1 applied and health ok", |d| {
        let s = &d.instances["a"].status;
        s.config_applied == Some(1) && s.health == "ok"
    })
    .await;

    bus.set(Behaviour {
        reject_from: Some(2),
        ..Behaviour::default()
    });
    d.apply(
        Change::Config {
            instrument: "a".into(),
            body: serde_json::json!({ "greeting": "other" }),
        },
        Origin::new(Source::Local, "uid 0", "test"),
        false,
    )
    .unwrap();
    d.reconcile().await;
    pump(&mut d, &mut rx, "version 2 rejected", |d| {
        d.instances["a"].status.config_rejected.is_some()
    })
    .await;
    let s = &d.instances["a"].status;
    assert_eq!(s.config_applied, Some(1), "the previous version stays");
    let r = s.config_rejected.as_ref().unwrap();
    assert_eq!((r.version, r.reason.as_str()), (2, "not this one"));
    // Each version is pushed once; the rejection is not retried.
    for _ in 0..3 {
        d.reconcile().await;
    }
    assert_eq!(bus.requests(), ["config a 1", "config a 2"]);
    assert_eq!(
        rt.count("start", "a"),
        1,
        "a config change does not restart it"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let events = bus.events();
    let config: Vec<_> = events.iter().filter(|(k, _)| k == "config").collect();
    assert_eq!(config.len(), 2, "{events:?}");
    assert_eq!(config[1].1["applied"], false);
}

#[tokio::test]
async fn an_adopted_instrument_gets_only_the_config_it_says_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    let bus = FakeBus::default();
    write_sensor(
        dir.path(),
        &instrument("a", "[instrument.config]\ngreeting = \"hi\""),
    );
    {
        let (mut d, mut rx) = daemon_on_bus(dir.path(), &rt, &bus);
        settle(&mut d, &mut rx).await;
        pump(&mut d, &mut rx, "config 1 applied", |d| {
            d.instances["a"].status.config_applied == Some(1)
        })
        .await;
    }
    // A new outpostd adopts it; the instrument says it runs version 1:
    // nothing is pushed again.
    let (mut d, mut rx) = daemon_on_bus(dir.path(), &rt, &bus);
    settle(&mut d, &mut rx).await;
    pump(&mut d, &mut rx, "health answered", |d| {
        d.instances["a"].status.health == "ok" && d.instances["a"].config_known
    })
    .await;
    assert_eq!(d.instances["a"].status.config_applied, Some(1));
    assert_eq!(bus.requests(), ["config a 1"]);
    drop(d);

    // This time it lost its config (it says 0): it gets version 1 again.
    bus.set_applied("a", 0);
    let (mut d, mut rx) = daemon_on_bus(dir.path(), &rt, &bus);
    settle(&mut d, &mut rx).await;
    pump(&mut d, &mut rx, "config 1 applied again", |d| {
        d.instances["a"].status.config_applied == Some(1)
    })
    .await;
    assert_eq!(bus.requests(), ["config a 1", "config a 1"]);
    assert_eq!(rt.count("start", "a"), 1, "adopted, never restarted");
}

#[tokio::test]
async fn a_retention_run_without_an_answer_is_recorded_failed_and_raised() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    let bus = FakeBus::default();
    bus.set(Behaviour {
        retention: None,
        ..Behaviour::default()
    });
    write_sensor(dir.path(), &instrument("a", "retention = \"1d\""));
    let (mut d, mut rx) = daemon_on_bus(dir.path(), &rt, &bus);
    settle(&mut d, &mut rx).await;
    pump(&mut d, &mut rx, "healthy", |d| {
        d.instances["a"].status.health == "ok"
    })
    .await;
    let (reply, answer) = tokio::sync::oneshot::channel();
    d.retention_now("a", None, reply);
    let mut answer = Box::pin(answer);
    let run = loop {
        tokio::select! {
            r = &mut answer => break r.unwrap().unwrap(),
            Some(cmd) = rx.recv() => {
                if d.on_command(cmd).await {
                    d.reconcile().await;
                }
            }
        }
    };
    assert_eq!(run.outcome, crate::db::RetentionOutcome::Failed);
    assert!(run.message.contains("no answer"), "{}", run.message);
    assert_eq!(run.period_s, 86400);
    assert_eq!(run.trigger, "manual");
    let stored = d.db.retention_runs(Some("a"), 5).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, run.id);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let failed: Vec<_> = bus
        .events()
        .into_iter()
        .filter(|(k, _)| k == "retention-failed")
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", bus.events());
    assert_eq!(failed[0].1["instrument"], "a");
    // Retention off: an operator's run needs a period.
    let (reply, answer) = tokio::sync::oneshot::channel();
    write_sensor(dir.path(), &instrument("a", "retention = \"off\""));
    d.reload();
    d.retention_now("a", None, reply);
    let err = answer.await.unwrap().unwrap_err();
    assert!(matches!(err, RetentionError::Off { .. }), "{err}");
}
