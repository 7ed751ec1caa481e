//! The bus section of the benchmark (see the binary's doc).

use std::fs;
use std::time::{Duration, Instant};

use instrument_sdk::Context;
use instrument_sdk::env::Env;
use outpost_tests::archive::variant;
use outpost_tests::{ImageFile, Sensor, entrypoint_pid, unique};

use super::{log_latencies, ms, percentile, row};

/// CPU time (user + system) of a process, in milliseconds.
fn cpu_ms(pid: i32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks * 10.0 // CLK_TCK = 100
}

/// CPU time of this process's waited-for children, in milliseconds.
fn children_cpu_ms() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 * 1e3 + tv.tv_usec() as f64 / 1e3;
    t(u.user_time()) + t(u.system_time())
}

fn health_latencies(s: &Sensor, names: &[String], since_ms: i64) -> Vec<f64> {
    let db = rusqlite::Connection::open(s.state.join("outpostd.db")).expect("db");
    let mut v = Vec::new();
    for n in names {
        let mut st = db
            .prepare("SELECT latency_ms FROM health_checks WHERE instrument = ?1 AND at_ms >= ?2 AND latency_ms IS NOT NULL")
            .expect("query");
        let rows = st
            .query_map(rusqlite::params![n, since_ms], |r| r.get::<_, f64>(0))
            .expect("rows");
        v.extend(rows.map_while(Result::ok));
    }
    v
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Publishes `n` events with the SDK from this (host) process, as the
/// platform identity, and returns how long until all were stored.
fn host_sdk_publish(s: &Sensor, n: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("platform.nkey");
    fs::copy(s.state.join("secrets/outpostd.nkey"), &key).unwrap();
    let env = Env {
        instrument: "outpostd".into(),
        sensor: "test".into(),
        nats_url: format!("nats://127.0.0.1:{}", s.nats_port()),
        nkey_file: key,
        event_buffer: 200_000,
        persistent_dir: dir.path().into(),
        transient_dir: dir.path().into(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let ctx = Context::connect(env).await.expect("connect");
        while !ctx.is_connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t0 = Instant::now();
        for i in 0..n {
            ctx.publish("bench", "bench.tick/1", &serde_json::json!({ "n": i }))
                .expect("queued");
        }
        assert!(
            ctx.flush_events(Duration::from_secs(300)).await,
            "host publish did not finish"
        );
        t0.elapsed()
    })
}

/// Core (fire-and-forget) publish of `n` envelopes with async-nats, then a
/// flush: the upper bound of the bus itself.
fn host_core_publish(s: &Sensor, n: u64) -> Duration {
    let seed = fs::read_to_string(s.state.join("secrets/outpostd.nkey")).unwrap();
    let port = s.nats_port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let client =
            outpost_platform::messaging::bus::connect_platform_client(port, &seed, "bench")
                .await
                .expect("connect");
        let body = bytes::Bytes::from(vec![b'x'; 200]);
        let t0 = Instant::now();
        for _ in 0..n {
            client
                .publish("bench.core", body.clone())
                .await
                .expect("publish");
        }
        client.flush().await.expect("flush");
        t0.elapsed()
    })
}

pub fn run(img: &ImageFile, count: usize) {
    println!("\n== bus\n{:<52} {:>9} {:>9}", "", "p50", "p99");
    let dir = tempfile::tempdir().unwrap();
    let quick = variant(img, dir.path(), |m| {
        m.name = "quick".into();
        m.health.interval = Duration::from_secs(1);
        m.health.timeout = Duration::from_millis(500);
    });
    let mut s = Sensor::new();
    s.import(&quick);
    s.write_sensor("");
    s.start(&[]);
    let names: Vec<String> = (0..count).map(|_| unique("hb")).collect();
    let body: String = names
        .iter()
        .map(|n| {
            format!("[[instrument]]\nname = \"{n}\"\nimage = \"quick\"\nversion = \"0.1.0\"\n")
        })
        .collect();
    s.write_sensor(&body);
    s.reload();
    for n in &names {
        s.wait_for(n, "healthy", Duration::from_secs(60), |v| {
            v["health"] == "ok"
        });
    }
    let first = log_latencies(&s.log_text(), &names, "state=\"starting\"", "to=ok");
    row("instrument start -> first healthy reply", &first, "ms");

    // 20 instruments at 1 Hz for a while.
    let window = Duration::from_secs(20);
    let daemon = s.daemon_pid().unwrap();
    let nats = s.nats_pid().unwrap();
    let entries: Vec<i32> = names
        .iter()
        .map(|n| entrypoint_pid(s.instrument(n).unwrap()["init_pid"].as_i64().unwrap() as i32))
        .collect();
    let since = now_ms();
    let (d0, n0) = (cpu_ms(daemon), cpu_ms(nats));
    let i0: f64 = entries.iter().map(|p| cpu_ms(*p)).sum();
    std::thread::sleep(window);
    let (d1, n1) = (cpu_ms(daemon), cpu_ms(nats));
    let i1: f64 = entries.iter().map(|p| cpu_ms(*p)).sum();
    let lat = health_latencies(&s, &names, since);
    let checks = lat.len().max(1) as f64;
    row(
        &format!("health round trip, {count} instruments at 1 Hz (NATS)"),
        &lat,
        "ms",
    );
    println!(
        "{:<52} {:>9.3} ms CPU/check (outpostd {:.3} + nats-server {:.3}; instruments {:.3})",
        "  CPU per check",
        (d1 - d0 + n1 - n0) / checks,
        (d1 - d0) / checks,
        (n1 - n0) / checks,
        (i1 - i0) / checks,
    );

    // Baseline: an exec-based check of the same instruments.
    let lxcpath = s.lxcpath();
    let mut exec = Vec::new();
    let c0 = children_cpu_ms();
    let rounds = 5;
    for _ in 0..rounds {
        for n in &names {
            let t0 = Instant::now();
            let st = std::process::Command::new("lxc-attach")
                .arg("-P")
                .arg(&lxcpath)
                .args(["-n", n, "--", "/bin/true"])
                .status()
                .expect("lxc-attach");
            assert!(st.success());
            exec.push(ms(t0.elapsed()));
        }
    }
    let c1 = children_cpu_ms();
    row(
        "baseline: exec check (lxc-attach -- /bin/true)",
        &exec,
        "ms",
    );
    println!(
        "{:<52} {:>9.3} ms CPU/check",
        "  CPU per check",
        (c1 - c0) / exec.len() as f64
    );
    println!(
        "{:<52} {:>9.1}x",
        "ratio: exec check p50 / NATS health p50",
        percentile(&exec, 50.0) / percentile(&lat, 50.0)
    );

    // Event throughput: from inside a container, through the proxy.
    let burst = 20_000u64;
    let target = &names[0];
    let before = s.events(Some(target)).len();
    s.write_sensor(&body.replacen(
        &format!("name = \"{target}\"\nimage = \"quick\"\nversion = \"0.1.0\"\n"),
        &format!("name = \"{target}\"\nimage = \"quick\"\nversion = \"0.1.0\"\nconfig = {{ burst = {burst} }}\n"),
        1,
    ));
    s.reload();
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let ev = s.events(Some(target));
        if let Some(d) = ev.iter().skip(before).find(|e| e.kind == "burst-done") {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "burst did not finish");
        std::thread::sleep(Duration::from_millis(500));
    };
    let inside_ms = done.payload["stored_ms"].as_f64().unwrap();
    let host = host_sdk_publish(&s, burst);
    let core = host_core_publish(&s, burst * 5);
    let rate = |n: u64, ms: f64| n as f64 / (ms / 1000.0);
    println!(
        "{:<52} {:>9.0} events/s ({burst} in {:.0} ms, stored)",
        "events from a container via the proxy (SDK, acked)",
        rate(burst, inside_ms),
        inside_ms
    );
    println!(
        "{:<52} {:>9.0} events/s ({burst} in {:.0} ms, stored)",
        "baseline: the same SDK on the host (acked)",
        rate(burst, ms(host)),
        ms(host)
    );
    println!(
        "{:<52} {:>9.0} msgs/s ({} in {:.0} ms, not stored)",
        "reference: async-nats core publish on the host",
        rate(burst * 5, ms(core)),
        burst * 5,
        ms(core)
    );

    s.write_sensor("");
    s.reload();
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.status()["instruments"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
