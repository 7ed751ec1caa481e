//! `escape-probe`'s settings: a TOML file, arguments, or the `probe` table
//! of the beacon's config (which the beacon writes to a file for it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    /// ICMP echo targets, IPv4 addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icmp: Vec<String>,
    /// HTTP canaries, "http://address:port/path".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
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
    pub icmp: Vec<Ipv4Addr>,
    /// (url, where it connects)
    pub http: Vec<(String, SocketAddr)>,
}

impl Plan {
    /// How many attempts one round makes.
    pub fn attempts(&self) -> usize {
        self.tcp.len() + self.udp.len() + self.dns.len() + self.icmp.len() + self.http.len()
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
                s.parse::<Ipv4Addr>().map_err(|_| {
                    format!("icmp[{i}] {s:?} is not an IPv4 address like 203.0.113.7 (IPv6 echo is not supported yet)")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut http = Vec::new();
        for (i, u) in self.http.iter().enumerate() {
            let url = reqwest::Url::parse(u)
                .map_err(|e| format!("http[{i}] {u:?} is not a URL ({e})"))?;
            if url.scheme() != "http" {
                return Err(format!(
                    "http[{i}] {u:?}: only http:// canaries are supported (the HMAC is the proof; \
                     TLS adds nothing to it)"
                ));
            }
            let ip: IpAddr = match url.host() {
                Some(url::Host::Ipv4(a)) => a.into(),
                Some(url::Host::Ipv6(a)) => a.into(),
                _ => {
                    return Err(format!(
                        "http[{i}] {u:?}: give the host as an IP address; resolving a name \
                         would itself be a DNS escape"
                    ));
                }
            };
            http.push((
                u.clone(),
                SocketAddr::new(ip, url.port_or_known_default().unwrap_or(80)),
            ));
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
        };
        if plan.attempts() == 0 {
            return Err(
                "no canary targets: list at least one of tcp, udp, dns, icmp or http".into(),
            );
        }
        Ok(plan)
    }
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
            icmp = ["10.0.0.1"]
            http = ["http://10.0.0.1:8080/canary"]
            dns = [{ name = "Canary.Example.org.", resolvers = ["10.0.0.53", "10.0.0.1:5353"] }]
            "#,
        )
        .unwrap();
        let p = c.plan().unwrap();
        assert_eq!(p.attempts(), 6);
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
            (Box::new(|c| c.icmp = vec!["::1".into()]), "icmp[0]"),
            (
                Box::new(|c| c.http = vec!["https://10.0.0.1/".into()]),
                "only http://",
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
