//! Home and the probe together, over loopback.

use super::*;
use crate::config::{DnsTarget, HttpsCanary, ProbeConfig, show_pin};
use outpost_protocol::beacon::{Level, Outcome};

const KEY: &str = "00112233445566778899aabbccddeeff";

/// Home on loopback address `ip`, answering on TCP, UDP, HTTP, HTTPS
/// and DNS, and a probe config with one target on each.
async fn home_on(dir: &Path, ip: &str) -> (Arc<Home>, ProbeConfig) {
    let home = Home::new(
        Key::from_hex(KEY).unwrap(),
        Some("canary.test".into()),
        Some(&dir.join("records.jsonl")),
    )
    .unwrap();
    let at: SocketAddr = SocketAddr::new(ip.parse().unwrap(), 0);
    let tcp = TcpListener::bind(at).await.unwrap();
    let http = TcpListener::bind(at).await.unwrap();
    let https = TcpListener::bind(at).await.unwrap();
    let udp = UdpSocket::bind(at).await.unwrap();
    let dns = UdpSocket::bind(at).await.unwrap();
    let (cert, cert_key) = tls::self_signed(&[ip.into()]).unwrap();
    let pin = tls::pin_of(&cert);
    let c = ProbeConfig {
        interval: Some("2s".into()),
        key: Some(KEY.into()),
        tcp: vec![tcp.local_addr().unwrap().to_string()],
        udp: vec![udp.local_addr().unwrap().to_string()],
        http: vec![format!("http://{}/canary", http.local_addr().unwrap())],
        https: vec![HttpsCanary {
            url: format!("https://{}/canary", https.local_addr().unwrap()),
            pin: show_pin(&pin),
        }],
        dns: vec![DnsTarget {
            name: "canary.test".into(),
            resolvers: vec![dns.local_addr().unwrap().to_string()],
        }],
        ..Default::default()
    };
    tokio::spawn(home.clone().serve_tcp(tcp));
    tokio::spawn(home.clone().serve_http(http));
    tokio::spawn(
        home.clone()
            .serve_https(https, tls::server_config(cert, cert_key).unwrap()),
    );
    tokio::spawn(home.clone().serve_udp(udp));
    tokio::spawn(home.clone().serve_dns(dns));
    (home, c)
}

async fn home(dir: &Path) -> (Arc<Home>, ProbeConfig) {
    home_on(dir, "127.0.0.1").await
}

async fn round(c: &ProbeConfig) -> Vec<outpost_protocol::beacon::Attempt> {
    let plan = Arc::new(c.plan().unwrap());
    let mut out = Vec::new();
    crate::probe::round(&plan, |a| out.push(a)).await;
    out
}

/// Every channel, on IPv4 and on IPv6 loopback: what the README promises
/// about IPv6 targets.
#[tokio::test]
async fn every_channel_escapes_to_home_with_proof_and_home_records_it() {
    for ip in ["127.0.0.1", "::1"] {
        let dir = tempfile::tempdir().unwrap();
        let (home, mut c) = home_on(dir.path(), ip).await;
        c.icmp = vec![ip.into()];
        let out = round(&c).await;
        let channels: std::collections::BTreeSet<Channel> = out.iter().map(|a| a.channel).collect();
        assert_eq!(
            channels.into_iter().collect::<Vec<_>>(),
            [
                Channel::Tcp,
                Channel::Udp,
                Channel::Dns,
                Channel::Icmp,
                Channel::Http,
                Channel::Https
            ],
            "{ip}"
        );
        for a in &out {
            let level = if a.channel == Channel::Icmp {
                Level::Reachable
            } else {
                Level::Proven
            };
            assert_eq!(
                (a.outcome, a.evidence.level),
                (Outcome::Escaped, level),
                "{ip}: {a:?}"
            );
        }
        let records = std::fs::read_to_string(dir.path().join("records.jsonl")).unwrap();
        let records: Vec<Record> = records
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 5, "{ip}: {records:?}");
        assert!(records.iter().all(|r| r.source.ip().is_loopback()));
        assert_eq!(home.stats()[&Channel::Https].proofs, 1, "{ip}");
    }
}

/// A forwarding proxy on loopback, as tinyproxy or squid: `CONNECT`
/// tunnels, an absolute-form request is forwarded as it came. Every
/// request line it saw is kept. With `refuse`, it answers everything
/// with 403, as a proxy whose policy forbids the target.
async fn proxy(refuse: bool) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    proxy_on("127.0.0.1", refuse).await
}

/// [`proxy`] on loopback address `ip`.
async fn proxy_on(ip: &str, refuse: bool) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .await
        .unwrap();
    let at = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let line = text.lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push(line.clone());
                if refuse {
                    let _ = s
                        .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\nConnection: close\r\n\r\ndenied\n")
                        .await;
                    return;
                }
                let mut parts = line.split(' ');
                let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
                let upstream = if method == "CONNECT" {
                    target.to_string()
                } else {
                    let rest = target.strip_prefix("http://").unwrap();
                    rest.split('/').next().unwrap().to_string()
                };
                let Ok(mut up) = TcpStream::connect(upstream.as_str()).await else {
                    let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                if method == "CONNECT" {
                    s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .unwrap();
                } else {
                    up.write_all(&head).await.unwrap();
                }
                let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            });
        }
    });
    (at, seen)
}

/// Through a proxy on IPv4 and on IPv6 loopback (canaries and proxy on the
/// same family).
#[tokio::test]
async fn a_proxy_path_is_tried_and_reported_apart_from_the_direct_one() {
    for ip in ["127.0.0.1", "::1"] {
        let dir = tempfile::tempdir().unwrap();
        let (_home, mut c) = home_on(dir.path(), ip).await;
        let (at, seen) = proxy_on(ip, false).await;
        c.proxies = vec![format!("http://{at}")];
        let out = round(&c).await;
        let via = format!(" via http://{at}");
        let proxied: Vec<_> = out.iter().filter(|a| a.target.ends_with(&via)).collect();
        // The HTTP and the HTTPS canary on http-proxy, the TCP one on connect.
        assert_eq!(proxied.len(), 3, "{ip}: {out:#?}");
        for a in &proxied {
            assert_eq!(
                (a.outcome, a.evidence.level),
                (Outcome::Escaped, Level::Proven),
                "{ip}: {a:?}"
            );
        }
        let on = |ch: Channel| proxied.iter().filter(|a| a.channel == ch).count();
        assert_eq!(
            (on(Channel::HttpProxy), on(Channel::Connect)),
            (2, 1),
            "{ip}"
        );
        // The direct attempts did not go through the proxy.
        assert_eq!(out.len(), 5 + 3, "{ip}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.iter().filter(|l| l.starts_with("CONNECT ")).count(),
            2,
            "{ip}: {seen:?}"
        );
        assert_eq!(
            seen.iter().filter(|l| l.starts_with("GET http://")).count(),
            1,
            "{ip}: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_proxy_that_refuses_is_blocked_with_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (_home, mut c) = home(dir.path()).await;
    let (at, _) = proxy(true).await;
    c.proxies = vec![format!("http://{at}")];
    let out = round(&c).await;
    let proxied: Vec<_> = out
        .iter()
        .filter(|a| a.target.ends_with(&format!(" via http://{at}")))
        .collect();
    assert_eq!(proxied.len(), 3);
    for a in proxied {
        assert_eq!(a.outcome, Outcome::Blocked, "{a:?}");
        assert!(a.evidence.detail.contains("403"), "{a:?}");
    }
    // A proxy nobody listens on: refused, like any closed port.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    c.proxies = vec![format!("http://{gone}")];
    for a in round(&c)
        .await
        .iter()
        .filter(|a| a.target.contains(" via "))
    {
        assert_eq!(a.outcome, Outcome::Blocked, "{a:?}");
        assert!(a.evidence.detail.contains("refused"), "{a:?}");
    }
}

#[tokio::test]
async fn a_tls_interceptor_is_blocked_with_the_pin_mismatch_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_home, c) = home(dir.path()).await;
    // The interceptor knows the key (it relays home's proof) but cannot
    // present home's certificate.
    let (cert, cert_key) = tls::self_signed(&["127.0.0.1".into()]).unwrap();
    let fake_pin = show_pin(&tls::pin_of(&cert));
    let interceptor = Home::new(Key::from_hex(KEY).unwrap(), None, None).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    tokio::spawn(interceptor.serve_https(l, tls::server_config(cert, cert_key).unwrap()));
    let real_pin = c.https[0].pin.clone();
    let probe = ProbeConfig {
        key: Some(KEY.into()),
        https: vec![HttpsCanary {
            url: format!("https://{at}/canary"),
            pin: real_pin.clone(),
        }],
        ..Default::default()
    };
    let a = round(&probe).await.remove(0);
    assert_eq!(a.outcome, Outcome::Blocked, "{a:?}");
    let d = &a.evidence.detail;
    assert!(d.contains("does not match the pin"), "{d}");
    assert!(d.contains(&fake_pin) && d.contains(&real_pin), "{d}");
    // Not TLS at all (a plain HTTP server on the https port): blocked, the
    // handshake's failure named.
    let probe = ProbeConfig {
        https: vec![HttpsCanary {
            url: c.http[0].replace("http://", "https://"),
            pin: real_pin,
        }],
        ..probe
    };
    let a = round(&probe).await.remove(0);
    assert_eq!(a.outcome, Outcome::Blocked, "{a:?}");
    assert!(a.evidence.detail.contains("TLS handshake failed"), "{a:?}");
    // A firewall that accepts and cuts the connection at once.
    let cutter = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cut_at = cutter.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = cutter.accept().await {
            drop(s);
        }
    });
    let probe = ProbeConfig {
        https: vec![HttpsCanary {
            url: format!("https://{cut_at}/canary"),
            pin: probe.https[0].pin.clone(),
        }],
        ..probe
    };
    let a = round(&probe).await.remove(0);
    assert_eq!(a.outcome, Outcome::Blocked, "{a:?}");
    assert!(a.evidence.detail.contains("cut before an answer"), "{a:?}");
}

#[tokio::test]
async fn a_probe_with_another_key_is_not_fooled_into_an_escape() {
    let dir = tempfile::tempdir().unwrap();
    let (_home, mut c) = home(dir.path()).await;
    c.key = Some("ffeeddccbbaa99887766554433221100".into());
    for a in round(&c).await {
        assert_eq!(a.outcome, Outcome::Blocked, "{a:?}");
        assert!(a.evidence.detail.contains("does not verify"), "{a:?}");
    }
}

#[tokio::test]
async fn an_http_server_that_is_not_home_is_a_blocked_attempt_with_its_answer() {
    // A "captive portal": answers every request with a redirect.
    let portal = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = portal.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = portal.accept().await.unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await;
            let _ = s
                .write_all(b"HTTP/1.1 302 Found\r\nLocation: http://login.portal/\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let c = ProbeConfig {
        key: Some(KEY.into()),
        http: vec![format!("http://{addr}/")],
        ..Default::default()
    };
    let a = round(&c).await.remove(0);
    assert_eq!(a.outcome, Outcome::Blocked);
    assert!(
        a.evidence
            .detail
            .contains("302 Found, Location http://login.portal/"),
        "{a:?}"
    );
}

#[test]
fn dns_answers_only_nonces_under_the_zone() {
    let home = Home::new(
        Key::from_hex(KEY).unwrap(),
        Some("Canary.Test.".into()),
        None,
    )
    .unwrap();
    let n = proof::nonce();
    let q = crate::probe::sockets::dns_query(1, &n, "canary.test").unwrap();
    let (a, proved) = home.dns_answer(&q).unwrap();
    assert_eq!(proved.as_deref(), Some(n.as_str()));
    let v = crate::probe::sockets::judge_dns(&Key::from_hex(KEY).unwrap(), &n, &a);
    assert_eq!(v.outcome, Outcome::Escaped);
    let q = crate::probe::sockets::dns_query(2, &n, "elsewhere.test").unwrap();
    assert_eq!(home.dns_answer(&q).unwrap().1, None);
}
