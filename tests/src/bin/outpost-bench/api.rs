//! The API section: what the local admin API costs, and that a status
//! question does not wait behind work.
//!
//! - D-Bus `Status` round trip with 20 instruments, against the bus
//!   daemon's own `GetId` on the same bus (the floor for any D-Bus call);
//! - `Status` while 10 instruments are being stopped and removed, against a
//!   call that goes through the daemon's loop (`Apply` of the unchanged
//!   state). Before the snapshot, every status question waited behind the
//!   stops; before stops ran as jobs off the loop, so did every call through
//!   it, and the stops ran one after another.

use std::time::{Duration, Instant};

use outpost_platform::dbus::client;
use outpost_tests::{ImageFile, Sensor, unique};

use crate::{instrument, ms, row};

pub fn run(img: &ImageFile, n: usize) {
    println!("\n== api (D-Bus)\n{:<52} {:>9} {:>9}", "", "p50", "p99");
    let mut s = Sensor::new();
    s.import(img);
    let names: Vec<String> = (0..n).map(|_| unique("api")).collect();
    let all: String = names.iter().map(|n| instrument(n)).collect();
    s.write_sensor(&all);
    s.start(&[]);
    for name in &names {
        s.wait_running(name);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let proxy = client::connect(&s.bus.address).await.expect("connect");
        let dbus = zbus::fdo::DBusProxy::new(proxy.inner().connection())
            .await
            .unwrap();
        let mut status = Vec::new();
        let mut floor = Vec::new();
        for _ in 0..300 {
            let t0 = Instant::now();
            let json = proxy.status().await.expect("Status");
            status.push(ms(t0.elapsed()));
            assert!(json.len() > 1000, "a status of {n} instruments");
            let t0 = Instant::now();
            dbus.get_id().await.expect("GetId");
            floor.push(ms(t0.elapsed()));
        }
        row(
            &format!("Status round trip, {n} instruments"),
            &status,
            "ms",
        );
        row("baseline: the bus daemon's GetId, same bus", &floor, "ms");

        // Stop and remove half of them, and ask meanwhile: Status from one
        // task, calls through the daemon's loop from another.
        let keep = &names[..n / 2];
        s.write_sensor(&keep.iter().map(|n| instrument(n)).collect::<String>());
        let file = std::fs::read_to_string(&s.sensor_file).unwrap();
        s.reload();
        let t0 = Instant::now();
        let done = std::cell::Cell::new(false);
        let sample_status = async {
            let mut during = Vec::new();
            while !done.get() {
                let a = Instant::now();
                let json = proxy.status().await.expect("Status");
                during.push(ms(a.elapsed()));
                let left = serde_json::from_str::<serde_json::Value>(&json).unwrap()["instruments"]
                    .as_array()
                    .map_or(0, |v| v.len());
                if left == keep.len() {
                    done.set(true);
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(120),
                    "removal did not end"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            during
        };
        let through_loop = async {
            let mut v = Vec::new();
            while !done.get() {
                let a = Instant::now();
                let _ = proxy.apply(&file, "bench", false, "bench").await;
                v.push(ms(a.elapsed()));
            }
            v
        };
        let (during, through_loop) = tokio::join!(sample_status, through_loop);
        println!(
            "{:<52} {:>9.0} ms",
            format!("stopping and removing {} instruments took", n - keep.len()),
            ms(t0.elapsed())
        );
        row("Status while they stop (from the snapshot)", &during, "ms");
        row(
            "baseline: a call through the daemon's loop, same time",
            &through_loop,
            "ms",
        );
    });
    drop(s);
}
