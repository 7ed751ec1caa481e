//! `escape-probe`'s settings: a TOML file, arguments, or the `probe` table
//! of the beacon's config (which the beacon writes to a file for it).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proof::Key;

/// The settings as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Time between rounds, like "2s" (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long one attempt may take, like "1s" (default: the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Interface every attempt leaves by (SO_BINDTODEVICE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The shared key, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A file holding the shared key, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// TCP canaries, "address:port".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<String>,
    /// UDP canaries, "address:port".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udp: Vec<String>,
    /// Names under home's zone, with the resolvers to ask.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsTarget>,
    /// ICMP echo targets, IPv4 or IPv6 addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icmp: Vec<String>,
    /// HTTP canaries, "http://address:port/path".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// HTTPS canaries, each with the sha256 of home's certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub https: Vec<HttpsCanary>,
    /// HTTP proxies, "http://address:port" (optionally with
    /// "user:password@"): every HTTP and HTTPS canary is also asked through
    /// each (channel `http-proxy`), and every TCP canary is also reached by
    /// `CONNECT` through each (channel `connect`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsCanary {
    /// "https://address:port/path".
    pub url: String,
    /// The sha256 of home's certificate (DER), "sha256:<hex>" as
    /// `beacon-home` prints it; `openssl x509 -fingerprint -sha256` output
    /// is taken too.
    pub pin: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsTarget {
    /// The zone home answers for, like "canary.example.org".
    pub name: String,
    /// Resolvers to try, "address:port" or "address" (port 53).
    pub resolvers: Vec<String>,
}

/// Checked settings: what the probe runs on.
#[derive(Debug, Clone)]
pub struct Plan {
    pub interval: Duration,
    pub timeout: Duration,
    pub interface: Option<String>,
    pub key: Key,
    pub tcp: Vec<SocketAddr>,
    pub udp: Vec<SocketAddr>,
    /// (zone, resolver)
    pub dns: Vec<(String, SocketAddr)>,
    pub icmp: Vec<IpAddr>,
    /// (url, where it connects)
    pub http: Vec<(String, SocketAddr)>,
    pub https: Vec<Https>,
    pub proxies: Vec<Proxy>,
}

/// A checked HTTPS canary.
#[derive(Debug, Clone, PartialEq)]
pub struct Https {
    pub url: String,
    /// Where it connects.
    pub addr: SocketAddr,
    /// What goes in the request line and `Host`.
    pub path: String,
    pub host: String,
    /// The sha256 of the certificate home must present.
    pub pin: [u8; 32],
}

/// A checked proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    /// As given, without a password: what attempt targets name.
    pub name: String,
    /// As given, with the password: what the HTTP client is handed.
    pub url: String,
    pub addr: SocketAddr,
    /// `Proxy-Authorization` value, when the URL had credentials.
    pub authorization: Option<String>,
}

impl Plan {
    /// How many attempts one round makes.
    pub fn attempts(&self) -> usize {
        let direct = self.tcp.len()
            + self.udp.len()
            + self.dns.len()
            + self.icmp.len()
            + self.http.len()
            + self.https.len();
        let proxied = self.proxies.len() * (self.http.len() + self.https.len() + self.tcp.len());
        direct + proxied
    }
}

pub use outpost_protocol::pin::{parse_pin, show_pin};

/// The IP address `url` names as its host; an error (naming `field`) for a
/// name, since resolving it would itself be a DNS escape.
fn url_ip(field: &str, u: &str, url: &reqwest::Url) -> Result<IpAddr, String> {
    match url.host() {
        Some(url::Host::Ipv4(a)) => Ok(a.into()),
        Some(url::Host::Ipv6(a)) => Ok(a.into()),
        _ => Err(format!(
            "{field} {u:?}: give the host as an IP address; resolving a name would itself be \
             a DNS escape"
        )),
    }
}

/// Shortest interval taken.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `v` as a duration, or `default` when it is not given; an error names
/// `field`.
pub fn duration(field: &str, v: &Option<String>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s)
            .map_err(|e| format!("{field} {s:?} is not a duration like 500ms, 2s or 1m ({e})")),
    }
}

fn addr(field: &str, i: usize, s: &str, default_port: Option<u16>) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let (Some(p), Ok(ip)) = (default_port, s.parse::<IpAddr>()) {
        return Ok(SocketAddr::new(ip, p));
    }
    Err(format!(
        "{field}[{i}] {s:?} is not an IP address and port like 203.0.113.7:7000; \
         give an address, not a name: resolving a name would itself be a DNS escape"
    ))
}

fn dns_name(field: &str, s: &str) -> Result<String, String> {
    let name = s.trim_end_matches('.').to_ascii_lowercase();
    let ok_label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    // The nonce label (32 digits and a dot) goes in front.
    if name.is_empty() || name.len() > 253 - 33 || !name.split('.').all(ok_label) {
        return Err(format!(
            "{field} {s:?} is not a DNS name like canary.example.org (labels of letters, digits \
             and '-', at most 220 characters in all)"
        ));
    }
    Ok(name)
}

impl ProbeConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<ProbeConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the probe config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("probe config {}: {e}", path.display()))
    }

    /// Checks every field and reads the key; an error names the field and
    /// what to write instead.
    pub fn plan(&self) -> Result<Plan, String> {
        let interval = duration("interval", &self.interval, Duration::from_secs(5))?;
        if interval < MIN_INTERVAL {
            return Err(format!(
                "interval {interval:?} is shorter than {MIN_INTERVAL:?}"
            ));
        }
        let timeout = duration("timeout", &self.timeout, interval)?;
        if timeout.is_zero() || timeout > interval {
            return Err(format!(
                "timeout {timeout:?} must be above zero and at most the interval ({interval:?}), \
                 so that rounds do not overlap"
            ));
        }
        if let Some(i) = &self.interface
            && (i.is_empty() || i.len() > 15 || i.contains(['/', ' ']))
        {
            return Err(format!("interface {i:?} is not an interface name"));
        }
        let key = match (&self.key, &self.key_file) {
            (Some(k), None) => Key::from_hex(k).map_err(|e| format!("key: {e}"))?,
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("key_file {}: {e}", f.display()))?;
                Key::from_hex(&text).map_err(|e| format!("key_file {}: {e}", f.display()))?
            }
            (Some(_), Some(_)) => return Err("give key or key_file, not both".into()),
            (None, None) => {
                return Err(
                    "no key: set key (hex) or key_file to the key beacon-home was started with"
                        .into(),
                );
            }
        };
        let list = |field: &str, v: &[String], port: Option<u16>| {
            v.iter()
                .enumerate()
                .map(|(i, s)| addr(field, i, s, port))
                .collect::<Result<Vec<_>, _>>()
        };
        let tcp = list("tcp", &self.tcp, None)?;
        let udp = list("udp", &self.udp, None)?;
        let mut dns = Vec::new();
        for (i, d) in self.dns.iter().enumerate() {
            let name = dns_name(&format!("dns[{i}].name"), &d.name)?;
            if d.resolvers.is_empty() {
                return Err(format!(
                    "dns[{i}] ({name}) has no resolvers; list the ones to try, like [\"10.0.0.53\"]"
                ));
            }
            for r in list(&format!("dns[{i}].resolvers"), &d.resolvers, Some(53))? {
                dns.push((name.clone(), r));
            }
        }
        let icmp = self
            .icmp
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<IpAddr>().map_err(|_| {
                    format!("icmp[{i}] {s:?} is not an IP address like 203.0.113.7 or 2001:db8::7")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut http = Vec::new();
        for (i, u) in self.http.iter().enumerate() {
            let field = format!("http[{i}]");
            let url =
                reqwest::Url::parse(u).map_err(|e| format!("{field} {u:?} is not a URL ({e})"))?;
            if url.scheme() != "http" {
                return Err(format!(
                    "{field} {u:?}: only http:// here; list an https:// canary under https, \
                     with its pin"
                ));
            }
            let ip = url_ip(&field, u, &url)?;
            http.push((
                u.clone(),
                SocketAddr::new(ip, url.port_or_known_default().unwrap_or(80)),
            ));
        }
        let mut https = Vec::new();
        for (i, c) in self.https.iter().enumerate() {
            let (field, u) = (format!("https[{i}].url"), &c.url);
            let url =
                reqwest::Url::parse(u).map_err(|e| format!("{field} {u:?} is not a URL ({e})"))?;
            if url.scheme() != "https" {
                return Err(format!(
                    "{field} {u:?}: only https:// here; list an http:// canary under http"
                ));
            }
            let ip = url_ip(&field, u, &url)?;
            let pin = parse_pin(&c.pin).ok_or_else(|| {
                format!(
                    "https[{i}].pin {:?} is not a sha256 pin like sha256:<64 hex digits>; \
                     beacon-home prints its certificate's pin when it starts",
                    c.pin
                )
            })?;
            let addr = SocketAddr::new(ip, url.port_or_known_default().unwrap_or(443));
            let mut path = url.path().to_string();
            if let Some(q) = url.query() {
                path.push('?');
                path.push_str(q);
            }
            https.push(Https {
                url: u.clone(),
                addr,
                path,
                host: url[url::Position::BeforeHost..url::Position::AfterPort].to_string(),
                pin,
            });
        }
        let mut proxies = Vec::new();
        for (i, u) in self.proxies.iter().enumerate() {
            let field = format!("proxies[{i}]");
            let url = reqwest::Url::parse(u).map_err(|e| {
                format!("{field} {u:?} is not a URL like http://10.0.0.8:3128 ({e})")
            })?;
            if url.scheme() != "http" {
                return Err(format!(
                    "{field} {u:?}: only http:// proxies are supported (as most are: the \
                     client speaks plain HTTP to the proxy, and CONNECT for TLS)"
                ));
            }
            if url.path() != "/" || url.query().is_some() {
                return Err(format!(
                    "{field} {u:?}: a proxy is an address and port, like http://10.0.0.8:3128, \
                     without a path"
                ));
            }
            let ip = url_ip(&field, u, &url)?;
            let addr = SocketAddr::new(ip, url.port_or_known_default().unwrap_or(80));
            let authorization = (!url.username().is_empty()).then(|| {
                use base64::Engine;
                let user = percent_decode(url.username());
                let pass = percent_decode(url.password().unwrap_or(""));
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
                )
            });
            let mut shown = url.clone();
            let _ = shown.set_password(None);
            let _ = shown.set_username("");
            proxies.push(Proxy {
                name: shown.as_str().trim_end_matches('/').to_string(),
                url: u.clone(),
                addr,
                authorization,
            });
        }
        if !proxies.is_empty() && self.http.is_empty() && self.https.is_empty() && tcp.is_empty() {
            return Err(
                "proxies are listed but no http, https or tcp canary to reach through them".into(),
            );
        }
        let plan = Plan {
            interval,
            timeout,
            interface: self.interface.clone(),
            key,
            tcp,
            udp,
            dns,
            icmp,
            http,
            https,
            proxies,
        };
        if plan.attempts() == 0 {
            return Err(
                "no canary targets: list at least one of tcp, udp, dns, icmp, http or https".into(),
            );
        }
        Ok(plan)
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ProbeConfig {
        ProbeConfig {
            interval: Some("1s".into()),
            key: Some("00112233445566778899aabbccddeeff".into()),
            tcp: vec!["10.0.0.1:7000".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_full_config_plans_every_target() {
        let c: ProbeConfig = toml::from_str(
            r#"
            interval = "2s"
            timeout = "500ms"
            interface = "seg0"
            key = "00112233445566778899aabbccddeeff"
            tcp = ["10.0.0.1:7000"]
            udp = ["10.0.0.1:7001"]
            icmp = ["10.0.0.1", "2001:db8::1"]
            http = ["http://10.0.0.1:8080/canary"]
            https = [{ url = "https://[2001:db8::1]:8443/canary?x=1", pin = "SHA256:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF" }]
            proxies = ["http://scout:p%40ss+1@10.0.0.8:3128"]
            dns = [{ name = "Canary.Example.org.", resolvers = ["10.0.0.53", "10.0.0.1:5353"] }]
            "#,
        )
        .unwrap();
        let p = c.plan().unwrap();
        // 1 tcp, 1 udp, 2 dns, 2 icmp, 1 http, 1 https; through the proxy
        // the http, the https and the tcp canary again.
        assert_eq!(p.attempts(), 8 + 3);
        assert_eq!(p.https[0].addr, "[2001:db8::1]:8443".parse().unwrap());
        assert_eq!(p.https[0].host, "[2001:db8::1]:8443");
        assert_eq!(p.https[0].path, "/canary?x=1");
        assert_eq!(
            show_pin(&p.https[0].pin),
            "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        );
        let proxy = &p.proxies[0];
        assert_eq!(proxy.name, "http://10.0.0.8:3128", "no password in targets");
        assert_eq!(proxy.addr, "10.0.0.8:3128".parse().unwrap());
        use base64::Engine;
        assert_eq!(
            proxy.authorization.as_deref(),
            Some(
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("scout:p@ss+1")
                )
                .as_str()
            )
        );
        assert_eq!(p.timeout, Duration::from_millis(500));
        assert_eq!(p.dns[0].0, "canary.example.org");
        assert_eq!(p.dns[0].1, "10.0.0.53:53".parse().unwrap());
        assert_eq!(p.http[0].1, "10.0.0.1:8080".parse().unwrap());
        // What the beacon writes for the probe reads back the same.
        let again: ProbeConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_settings_name_the_field_and_the_fix() {
        type Edit = Box<dyn Fn(&mut ProbeConfig)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|c| c.interval = Some("soon".into())),
                "interval \"soon\"",
            ),
            (
                Box::new(|c| c.interval = Some("1ms".into())),
                "shorter than",
            ),
            (
                Box::new(|c| c.timeout = Some("5s".into())),
                "at most the interval",
            ),
            (Box::new(|c| c.key = None), "no key"),
            (
                Box::new(|c| c.tcp = vec!["example.com:80".into()]),
                "tcp[0] \"example.com:80\"",
            ),
            (Box::new(|c| c.tcp = vec![]), "no canary targets"),
            (Box::new(|c| c.icmp = vec!["canary".into()]), "icmp[0]"),
            (
                Box::new(|c| c.http = vec!["https://10.0.0.1/".into()]),
                "under https, with its pin",
            ),
            (
                Box::new(|c| {
                    c.https = vec![HttpsCanary {
                        url: "https://10.0.0.1/".into(),
                        pin: "sha256:abcd".into(),
                    }]
                }),
                "https[0].pin",
            ),
            (
                Box::new(|c| {
                    c.https = vec![HttpsCanary {
                        url: "https://home.example/".into(),
                        pin: format!("sha256:{}", "ab".repeat(32)),
                    }]
                }),
                "https[0].url",
            ),
            (
                Box::new(|c| c.proxies = vec!["socks5://10.0.0.8:1080".into()]),
                "only http:// proxies",
            ),
            (
                Box::new(|c| c.proxies = vec!["http://proxy.corp:3128".into()]),
                "proxies[0]",
            ),
            (
                Box::new(|c| c.proxies = vec!["http://10.0.0.8:3128/x".into()]),
                "without a path",
            ),
            (
                Box::new(|c| {
                    c.tcp = vec![];
                    c.udp = vec!["10.0.0.1:7001".into()];
                    c.proxies = vec!["http://10.0.0.8:3128".into()];
                }),
                "no http, https or tcp canary",
            ),
            (
                Box::new(|c| c.http = vec!["http://home.example/".into()]),
                "IP address",
            ),
            (
                Box::new(|c| {
                    c.dns = vec![DnsTarget {
                        name: "bad_name".into(),
                        resolvers: vec!["10.0.0.53".into()],
                    }]
                }),
                "dns[0].name",
            ),
            (
                Box::new(|c| {
                    c.dns = vec![DnsTarget {
                        name: "ok.example".into(),
                        resolvers: vec![],
                    }]
                }),
                "no resolvers",
            ),
        ];
        for (edit, want) in cases {
            let mut c = base();
            edit(&mut c);
            let e = c.plan().unwrap_err();
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }
}
