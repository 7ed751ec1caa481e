//! The downloader against a real HTTP server on 127.0.0.1 (and 127.0.0.2,
//! another origin): every attack it must refuse, each with its reason and
//! nothing stored, and the good cases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::config::{Config, Resource, Verify};
use crate::fetch::Client;
use crate::store::Store;
use crate::verify::Metadata;
use crate::verify::test_signer::Signer;
use crate::{Outcome, check};

type Files = Arc<Mutex<HashMap<String, Vec<u8>>>>;

struct Server {
    files: Files,
    /// `http://127.0.0.1:<port>` and the same server as another origin.
    home: String,
    away: String,
}

async fn serve(
    State((files, away)): State<(Files, String)>,
    Path(name): Path<String>,
    h: HeaderMap,
) -> Response {
    match name.as_str() {
        "trickle" => {
            let s = futures::stream::unfold(0u32, |n| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                (n < 1000).then(|| {
                    (
                        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x")),
                        n + 1,
                    )
                })
            });
            return axum::body::Body::from_stream(s).into_response();
        }
        "away" => {
            return (
                StatusCode::FOUND,
                [(header::LOCATION, format!("{away}/probe"))],
            )
                .into_response();
        }
        "home" => return (StatusCode::FOUND, [(header::LOCATION, "/probe")]).into_response(),
        _ => {}
    }
    let Some(body) = files.lock().unwrap().get(&name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{}\"", hex::encode(Sha256::digest(&body)));
    if h.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    ([(header::ETAG, etag)], body).into_response()
}

async fn server() -> Server {
    let files: Files = Arc::default();
    let home = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = home.local_addr().unwrap().port();
    let away = tokio::net::TcpListener::bind(("127.0.0.2", port))
        .await
        .unwrap();
    let away_url = format!("http://127.0.0.2:{port}");
    let app = axum::Router::new()
        .route("/{name}", axum::routing::get(serve))
        .with_state((files.clone(), away_url.clone()));
    for l in [home, away] {
        let app = app.clone();
        tokio::spawn(async move { axum::serve(l, app).await });
    }
    Server {
        files,
        home: format!("http://127.0.0.1:{port}"),
        away: away_url,
    }
}

impl Server {
    fn put(&self, name: &str, body: &[u8]) {
        self.files
            .lock()
            .unwrap()
            .insert(name.into(), body.to_vec());
    }

    /// Publishes `body` as `file` with metadata `meta.json` signed by `s`.
    fn release(
        &self,
        s: &Signer,
        version: &str,
        body: &[u8],
        expires_in: i64,
        tweak: impl Fn(&mut Metadata),
    ) {
        self.put(&format!("probe-{version}"), body);
        let expires = if expires_in >= 0 {
            SystemTime::now() + Duration::from_secs(expires_in as u64)
        } else {
            SystemTime::now() - Duration::from_secs((-expires_in) as u64)
        };
        let mut m = Metadata {
            name: "escape-probe".into(),
            version: version.into(),
            expires: humantime::format_rfc3339_seconds(expires).to_string(),
            sha256: hex::encode(Sha256::digest(body)),
            length: body.len() as u64,
            url: format!("probe-{version}"),
        };
        tweak(&mut m);
        let doc = serde_json::to_vec(&m).unwrap();
        self.put("meta.json.minisig", s.sign(&doc).as_bytes());
        self.put("meta.json", &doc);
    }
}

fn resource(url: String, verify: Verify) -> Resource {
    serde_json::from_value(serde_json::json!({
        "name": "escape-probe", "url": url, "verify": verify, "max-size": "1MiB",
        "keep": 2, "min-rate": 10000,
    }))
    .unwrap()
}

fn client(r: &Resource) -> Client {
    let mut c = Client::new(&Config::default(), r).unwrap();
    c.grace = Duration::from_secs(1);
    c
}

fn refused(o: Outcome) -> &'static str {
    match o {
        Outcome::Refused(r) => r.kind(),
        other => panic!("not refused: {other:?}"),
    }
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tokio::test]
async fn a_pinned_resource_is_taken_only_as_pinned_small_and_fast_and_from_its_origin() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path()).unwrap();
    let now = SystemTime::now();
    srv.put("probe", b"PROBE v1");

    // The wrong bytes: refused, nothing stored.
    let r = resource(
        format!("{}/probe", srv.home),
        Verify::Sha256(sha(b"something else")),
    );
    assert_eq!(refused(check(&r, &client(&r), &store, now).await), "hash");
    assert!(store.versions("escape-probe").is_empty());

    // Endless data: cut at max-size.
    srv.put("big", &vec![0u8; 2 << 20]);
    let r = resource(
        format!("{}/big", srv.home),
        Verify::Sha256(sha(&vec![0u8; 2 << 20])),
    );
    assert_eq!(
        refused(check(&r, &client(&r), &store, now).await),
        "too-large"
    );

    // A server that trickles: refused as too slow once the grace is over.
    let r = resource(format!("{}/trickle", srv.home), Verify::Sha256(sha(b"x")));
    assert_eq!(
        refused(check(&r, &client(&r), &store, now).await),
        "too-slow"
    );

    // A redirect to another host is refused; within the origin it is fine.
    let r = resource(
        format!("{}/away", srv.home),
        Verify::Sha256(sha(b"PROBE v1")),
    );
    assert_eq!(
        refused(check(&r, &client(&r), &store, now).await),
        "redirect"
    );
    assert!(store.versions("escape-probe").is_empty());
    let r = resource(
        format!("{}/home", srv.home),
        Verify::Sha256(sha(b"PROBE v1")),
    );
    match check(&r, &client(&r), &store, now).await {
        Outcome::Fetched { path, sha256, .. } => {
            assert_eq!(std::fs::read(path).unwrap(), b"PROBE v1");
            assert_eq!(sha256, sha(b"PROBE v1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        check(&r, &client(&r), &store, now).await,
        Outcome::Unchanged { .. }
    ));
    // No partial file anywhere.
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn signed_releases_go_up_only_unexpired_and_signed_by_a_configured_key() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path()).unwrap();
    let now = SystemTime::now();
    let key = Signer::new();
    let r = resource(
        format!("{}/meta.json", srv.home),
        Verify::Keys(vec![key.public().text.clone()]),
    );
    let c = client(&r);

    srv.release(&key, "1.0.0", b"probe one", 3600, |_| {});
    match check(&r, &c, &store, now).await {
        Outcome::Fetched { version, .. } => assert_eq!(version, "1.0.0"),
        other => panic!("{other:?}"),
    }
    // The same metadata again: not modified.
    assert!(
        matches!(check(&r, &c, &store, now).await, Outcome::Unchanged { version: Some(v) } if v == "1.0.0")
    );

    // Each attack: refused for its reason, and 1.0.0 stays the only one.
    let other = Signer::new();
    srv.release(&other, "2.0.0", b"evil", 3600, |_| {});
    assert_eq!(refused(check(&r, &c, &store, now).await), "unknown-key");
    srv.release(&key, "0.9.0", b"old but signed", 3600, |_| {});
    assert_eq!(refused(check(&r, &c, &store, now).await), "rollback");
    srv.release(&key, "2.0.0", b"frozen", -60, |_| {});
    assert_eq!(refused(check(&r, &c, &store, now).await), "expired");
    srv.release(&key, "2.0.0", b"probe two", 3600, |m| {
        m.sha256 = sha(b"another")
    });
    assert_eq!(refused(check(&r, &c, &store, now).await), "hash");
    srv.release(&key, "2.0.0", b"probe two, longer than said", 3600, |m| {
        m.length = 9
    });
    assert_eq!(refused(check(&r, &c, &store, now).await), "too-large");
    let away = srv.away.clone();
    srv.release(&key, "2.0.0", b"probe two", 3600, move |m| {
        m.url = format!("{away}/probe-2.0.0")
    });
    assert_eq!(refused(check(&r, &c, &store, now).await), "redirect");
    srv.release(&key, "../../etc", b"probe two", 3600, |_| {});
    assert_eq!(refused(check(&r, &c, &store, now).await), "metadata");
    // Tampered after signing.
    srv.release(&key, "2.0.0", b"probe two", 3600, |_| {});
    let mut doc = srv.files.lock().unwrap()["meta.json"].clone();
    let at = doc.len() - 5;
    doc[at] ^= 1;
    srv.put("meta.json", &doc);
    assert_eq!(refused(check(&r, &c, &store, now).await), "signature");
    assert_eq!(store.versions("escape-probe"), ["1.0.0"]);

    // Newer versions: the newest two kept, the highest remembered.
    for v in ["2.0.0", "2.1.0", "10.0.0"] {
        srv.release(&key, v, format!("probe {v}").as_bytes(), 3600, |_| {});
        assert!(
            matches!(check(&r, &c, &store, now).await, Outcome::Fetched { .. }),
            "{v}"
        );
    }
    assert_eq!(store.versions("escape-probe"), ["10.0.0", "2.1.0"]);
    // Each kept version's signed metadata is kept with it, for the
    // platform to verify again; a pruned version's goes with it.
    let (m, sig) = store.meta("escape-probe", "10.0.0");
    let m: Metadata = serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap();
    assert_eq!(m.version, "10.0.0");
    assert!(
        std::fs::read_to_string(sig)
            .unwrap()
            .contains("untrusted comment")
    );
    assert!(!store.meta("escape-probe", "2.0.0").0.exists());
    assert_eq!(
        store.state("escape-probe").highest.as_deref(),
        Some("10.0.0")
    );
    srv.release(&key, "2.1.0", b"probe 2.1.0", 3600, |_| {});
    assert_eq!(refused(check(&r, &c, &store, now).await), "rollback");
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
