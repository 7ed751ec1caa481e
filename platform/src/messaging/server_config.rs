//! The nats-server config outpostd generates (JSON, which nats-server
//! reads as config). Pure.
//!
//! Every instrument is alone in an account of its own, with one user (its
//! nkey) and a connection limit nats-server enforces (nats-server 2.9
//! limits connections per account, not per user). The platform's account
//! holds JetStream and the `EVENTS` stream. What crosses between accounts
//! is only what the manifests allow, as exports and imports:
//!
//! | from → to | subjects | kind |
//! |---|---|---|
//! | instrument → platform | `outpost.events.<self>.>` | service (a JetStream publish and its ack) |
//! | platform → instrument | `outpost.i.<self>.>`, `$SRV.*.<self>[.*]` | service (health, config, retention, artifacts; micro-service verbs) |
//! | instrument → reader | `outpost.events.<self>.>` | stream, to peers whose manifest may read them |
//! | caller → instrument | `outpost.i.<self>.rpc.>` | service, from peers whose manifest may call it |
//!
//! Subject permissions per user stay as well (`subjects::instrument_permissions`).

use std::collections::BTreeMap;
use std::path::Path;

use outpost_protocol::subjects::{self, SubjectPermissions};
use serde_json::{Value, json};

/// The platform's account: its user, JetStream and the `EVENTS` stream.
pub const PLATFORM_ACCOUNT: &str = "OUTPOST";

/// The account of instrument `name`.
pub fn account_of(name: &str) -> String {
    format!("INSTRUMENT_{name}")
}

/// One instrument's identity and what its manifest lets it reach, among
/// the instruments that exist on the sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentUser {
    pub name: String,
    pub nkey: String,
    pub permissions: SubjectPermissions,
    /// Peers whose events it may read.
    pub reads: Vec<String>,
    /// Peers it may call.
    pub calls: Vec<String>,
}

/// What the config is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings<'a> {
    pub port: u16,
    pub server_name: &'a str,
    pub dir: &'a Path,
    pub jetstream_max_file: u64,
    pub jetstream_max_memory: u64,
    /// Connections one instrument's account may have at once.
    pub max_connections_per_instrument: usize,
}

fn service_import(account: &str, subject: &str) -> Value {
    json!({"service": {"account": account, "subject": subject}})
}

/// Renders the config: bound to 127.0.0.1 only, JetStream on with its
/// store under the state directory, the platform's account and one account
/// per instrument.
pub fn render(
    s: &ServerSettings<'_>,
    platform_nkey: &str,
    instruments: &[InstrumentUser],
) -> String {
    let mut accounts = BTreeMap::new();
    let mut platform_imports = Vec::new();
    for i in instruments {
        let own = account_of(&i.name);
        platform_imports.push(service_import(&own, &subjects::instrument_all(&i.name)));
        platform_imports.push(service_import(&own, &format!("$SRV.*.{}", i.name)));
        platform_imports.push(service_import(&own, &format!("$SRV.*.{}.*", i.name)));

        let callers: Vec<String> = instruments
            .iter()
            .filter(|o| o.name != i.name && o.calls.contains(&i.name))
            .map(|o| account_of(&o.name))
            .collect();
        let readers: Vec<String> = instruments
            .iter()
            .filter(|o| o.name != i.name && o.reads.contains(&i.name))
            .map(|o| account_of(&o.name))
            .collect();
        let mut to_platform_and_callers = vec![PLATFORM_ACCOUNT.to_string()];
        to_platform_and_callers.extend(callers);
        let mut exports = vec![
            json!({"service": subjects::instrument_all(&i.name), "accounts": to_platform_and_callers}),
            json!({"service": format!("$SRV.*.{}", i.name), "accounts": [PLATFORM_ACCOUNT]}),
            json!({"service": format!("$SRV.*.{}.*", i.name), "accounts": [PLATFORM_ACCOUNT]}),
        ];
        if !readers.is_empty() {
            exports.push(json!({"stream": subjects::events_of(&i.name), "accounts": readers}));
        }
        let mut imports = vec![service_import(
            PLATFORM_ACCOUNT,
            &subjects::events_of(&i.name),
        )];
        for peer in instruments.iter().filter(|o| o.name != i.name) {
            if i.reads.contains(&peer.name) {
                imports.push(json!({"stream": {"account": account_of(&peer.name), "subject": subjects::events_of(&peer.name)}}));
            }
            if i.calls.contains(&peer.name) {
                imports.push(service_import(
                    &account_of(&peer.name),
                    &format!("outpost.i.{}.rpc.>", peer.name),
                ));
            }
        }
        accounts.insert(
            own,
            json!({
                "users": [{
                    "nkey": i.nkey,
                    "permissions": {
                        "publish": {"allow": i.permissions.publish, "deny": i.permissions.deny_publish},
                        "subscribe": {"allow": i.permissions.subscribe},
                        "allow_responses": true,
                    }
                }],
                "limits": {"max_connections": s.max_connections_per_instrument},
                "exports": exports,
                "imports": imports,
            }),
        );
    }
    accounts.insert(
        PLATFORM_ACCOUNT.to_string(),
        json!({
            "jetstream": "enabled",
            "users": [{
                "nkey": platform_nkey,
                "permissions": {
                    "publish": {"allow": [">"]},
                    "subscribe": {"allow": [">"]},
                }
            }],
            "exports": [{"service": subjects::EVENTS_ALL}],
            "imports": platform_imports,
        }),
    );
    let conf = json!({
        "server_name": s.server_name,
        "host": "127.0.0.1",
        "port": s.port,
        "pid_file": s.dir.join("nats-server.pid"),
        "log_file": s.dir.join("nats-server.log"),
        "logfile_size_limit": 10 * 1024 * 1024,
        "max_payload": 1024 * 1024,
        "jetstream": {
            "store_dir": s.dir.join("jetstream"),
            "max_file_store": s.jetstream_max_file,
            "max_memory_store": s.jetstream_max_memory,
        },
        "accounts": accounts,
    });
    format!(
        "# Generated by outpostd; edits are overwritten.\n{}\n",
        serde_json::to_string_pretty(&conf).expect("config serializes")
    )
}

/// The instruments that have an account in a config this module wrote.
pub fn instrument_accounts(text: &str) -> std::collections::BTreeSet<String> {
    let body = text.split_once('\n').map_or(text, |(_, b)| b);
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["accounts"].as_object().map(|a| {
                a.keys()
                    .filter_map(|k| k.strip_prefix("INSTRUMENT_").map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Whether a config file was written by an outpostd from before accounts
/// (its users were all in the global account, with JetStream there).
pub fn is_global_account_config(text: &str) -> bool {
    text.contains("\"authorization\"") && !text.contains("\"accounts\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, reads: &[&str], calls: &[&str]) -> InstrumentUser {
        InstrumentUser {
            name: name.into(),
            nkey: format!("U{}", name.to_uppercase()),
            permissions: SubjectPermissions {
                publish: vec![format!("outpost.events.{name}.>")],
                deny_publish: vec![format!("outpost.events.{name}.artifact-fetched")],
                subscribe: vec![format!("outpost.i.{name}.>")],
            },
            reads: reads.iter().map(|s| s.to_string()).collect(),
            calls: calls.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn body() -> Value {
        let c = render(
            &ServerSettings {
                port: 4300,
                server_name: "lab-1",
                dir: Path::new("/s/nats"),
                jetstream_max_file: 1 << 30,
                jetstream_max_memory: 64 << 20,
                max_connections_per_instrument: 16,
            },
            "UPLATFORM",
            &[
                user("beacon", &["downloader"], &["downloader"]),
                user("downloader", &[], &[]),
            ],
        );
        serde_json::from_str(c.split_once('\n').unwrap().1).unwrap()
    }

    #[test]
    fn one_account_per_instrument_with_its_limit_and_the_platform_holding_jetstream() {
        let b = body();
        assert_eq!(b["host"], "127.0.0.1");
        assert_eq!(b["jetstream"]["store_dir"], "/s/nats/jetstream");
        assert!(b.get("authorization").is_none());
        let acc = &b["accounts"];
        assert_eq!(acc["OUTPOST"]["jetstream"], "enabled");
        assert_eq!(acc["OUTPOST"]["users"][0]["nkey"], "UPLATFORM");
        let beacon = &acc["INSTRUMENT_beacon"];
        assert_eq!(beacon["users"][0]["nkey"], "UBEACON");
        assert_eq!(beacon["users"][0]["permissions"]["allow_responses"], true);
        assert_eq!(beacon["limits"]["max_connections"], 16);
        // Its events reach the platform's JetStream.
        assert!(beacon["imports"].as_array().unwrap().contains(&json!(
            {"service": {"account": "OUTPOST", "subject": "outpost.events.beacon.>"}}
        )));
        // The platform reaches what is addressed to it.
        assert!(
            acc["OUTPOST"]["imports"]
                .as_array()
                .unwrap()
                .contains(&json!(
                    {"service": {"account": "INSTRUMENT_beacon", "subject": "outpost.i.beacon.>"}}
                ))
        );
    }

    #[test]
    fn peers_reach_each_other_only_as_the_manifests_allow() {
        let b = body();
        let acc = &b["accounts"];
        let beacon_imports = acc["INSTRUMENT_beacon"]["imports"].as_array().unwrap();
        assert!(beacon_imports.contains(&json!(
            {"stream": {"account": "INSTRUMENT_downloader", "subject": "outpost.events.downloader.>"}}
        )));
        assert!(beacon_imports.contains(&json!(
            {"service": {"account": "INSTRUMENT_downloader", "subject": "outpost.i.downloader.rpc.>"}}
        )));
        let dl = &acc["INSTRUMENT_downloader"];
        let dl_imports = dl["imports"].as_array().unwrap();
        assert_eq!(dl_imports.len(), 1, "the downloader reads and calls nobody");
        let exports = dl["exports"].as_array().unwrap();
        assert!(exports.contains(&json!(
            {"stream": "outpost.events.downloader.>", "accounts": ["INSTRUMENT_beacon"]}
        )));
        assert!(exports.contains(&json!(
            {"service": "outpost.i.downloader.>", "accounts": ["OUTPOST", "INSTRUMENT_beacon"]}
        )));
        // Nobody reads the beacon's events: no stream export at all.
        assert!(
            !acc["INSTRUMENT_beacon"]["exports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e.get("stream").is_some())
        );
    }

    #[test]
    fn the_accounts_of_a_config_are_read_back() {
        let c = format!("# header\n{}", body());
        let names: Vec<String> = instrument_accounts(&c).into_iter().collect();
        assert_eq!(names, vec!["beacon".to_string(), "downloader".to_string()]);
        assert!(instrument_accounts("not json").is_empty());
    }

    #[test]
    fn configs_from_before_accounts_are_recognised() {
        assert!(is_global_account_config(
            r#"{"authorization": {"users": []}}"#
        ));
        let c = body().to_string();
        assert!(!is_global_account_config(&c));
    }
}
