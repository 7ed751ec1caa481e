//! Interface bindings: what the operator binds each interface role of an
//! image to on the sensor (DESIGN.md, network interfaces).
//!
//! In the sensor file, per instrument and role:
//!
//! ```toml
//! [instrument.interfaces.seg0]
//! type = "bridge"            # phy | bridge | macvlan | mirror (the role's type)
//! bridge = "br-seg"          # bridge: the host bridge
//! create = true              #   made if missing
//! enslave = "eth1"           #   and this host interface put on it
//! # device = "eth2"          # phy: the host interface moved in
//! # parent = "eth0"          # macvlan: the parent ...
//! # mode = "bridge"          #   ... and the mode
//! # source = "eth3"          # mirror: whose traffic is copied
//! addresses = ["192.0.2.10/24", "2001:db8::10/64"]
//! routes = [{ to = "0.0.0.0/0", via = "192.0.2.1" }]
//! mtu = 1500
//! promiscuous = false
//! ```
//!
//! Parsing is serde with unknown fields refused; [`Binding::validate`]
//! checks a binding alone, [`validate_against`] checks a set of bindings
//! against the manifest's roles.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::manifest::{InterfaceCapability, InterfaceType, Manifest, NetworkAccess};
use crate::validate::Collector;

/// Longest Linux interface name.
pub const IFNAMSIZ_MAX: usize = 15;

/// macvlan modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MacvlanMode {
    Private,
    Vepa,
    #[default]
    Bridge,
    Passthru,
}

/// A static route inside the instrument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Route {
    /// Destination prefix, e.g. `0.0.0.0/0`.
    pub to: String,
    /// Gateway address; without one the route is on-link.
    #[serde(default)]
    pub via: Option<String>,
}

/// One role's binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Binding {
    #[serde(rename = "type")]
    pub kind: InterfaceType,
    /// phy: the host interface.
    #[serde(default)]
    pub device: Option<String>,
    /// bridge: the host bridge.
    #[serde(default)]
    pub bridge: Option<String>,
    /// bridge: create it when missing.
    #[serde(default)]
    pub create: bool,
    /// bridge: a host interface to put on the bridge.
    #[serde(default)]
    pub enslave: Option<String>,
    /// macvlan: the parent interface.
    #[serde(default)]
    pub parent: Option<String>,
    /// macvlan: the mode (default bridge).
    #[serde(default)]
    pub mode: Option<MacvlanMode>,
    /// mirror: the interface whose traffic is copied.
    #[serde(default)]
    pub source: Option<String>,
    /// Static addresses with prefix length.
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub promiscuous: bool,
}

/// An address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses `192.0.2.10/24` or `2001:db8::1/64`.
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} has no prefix length (write it like 192.0.2.10/24)"))?;
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{a:?} in {s:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("prefix length {p:?} in {s:?} is not between 0 and {max}"))?;
    Ok(Cidr { addr, prefix })
}

/// Why `name` cannot be a host interface name, or `None`.
pub fn ifname_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > IFNAMSIZ_MAX {
        return Some(format!("{name:?} is not 1 to {IFNAMSIZ_MAX} characters"));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Some(format!("{name:?} is not a valid interface name"));
    }
    None
}

impl Binding {
    /// The host interface a binding needs to exist before it is applied
    /// (and whose use it may conflict on), by field.
    pub fn host_interfaces(&self) -> Vec<(&'static str, &str)> {
        let mut v = Vec::new();
        match self.kind {
            InterfaceType::Phy => v.extend(self.device.as_deref().map(|d| ("device", d))),
            InterfaceType::Bridge => {
                v.extend(self.enslave.as_deref().map(|d| ("enslave", d)));
            }
            InterfaceType::Macvlan => v.extend(self.parent.as_deref().map(|d| ("parent", d))),
            InterfaceType::Mirror => v.extend(self.source.as_deref().map(|d| ("source", d))),
        }
        v
    }

    /// The host interface this binding takes for itself, so that no other
    /// binding may use it: a phy's device, or what a bridge binding
    /// enslaves.
    pub fn owns(&self) -> Option<&str> {
        match self.kind {
            InterfaceType::Phy => self.device.as_deref(),
            InterfaceType::Bridge => self.enslave.as_deref(),
            InterfaceType::Macvlan | InterfaceType::Mirror => None,
        }
    }

    /// Checks the binding alone; `at` is the field path prefix.
    pub(crate) fn check(&self, at: &str, c: &mut Collector) {
        let f = |name: &str| format!("{at}.{name}");
        let kind = self.kind;
        let need = |c: &mut Collector, field: &str, v: &Option<String>, example: &str| match v {
            None => c.push(
                f(field),
                format!("is required for a {kind} binding"),
                format!("add {field} = \"{example}\""),
            ),
            Some(n) => {
                if let Some(p) = ifname_problem(n) {
                    c.push(f(field), p, "give the name of a host interface, e.g. eth1");
                }
            }
        };
        let not_for = |c: &mut Collector, field: &str, set: bool| {
            if set {
                c.push(
                    f(field),
                    format!("does not apply to a {kind} binding"),
                    format!("remove {field}"),
                );
            }
        };
        match self.kind {
            InterfaceType::Phy => need(c, "device", &self.device, "eth1"),
            InterfaceType::Bridge => need(c, "bridge", &self.bridge, "br-seg"),
            InterfaceType::Macvlan => need(c, "parent", &self.parent, "eth0"),
            InterfaceType::Mirror => need(c, "source", &self.source, "eth2"),
        }
        not_for(
            c,
            "device",
            self.kind != InterfaceType::Phy && self.device.is_some(),
        );
        not_for(
            c,
            "bridge",
            self.kind != InterfaceType::Bridge && self.bridge.is_some(),
        );
        not_for(
            c,
            "create",
            self.kind != InterfaceType::Bridge && self.create,
        );
        not_for(
            c,
            "enslave",
            self.kind != InterfaceType::Bridge && self.enslave.is_some(),
        );
        not_for(
            c,
            "parent",
            self.kind != InterfaceType::Macvlan && self.parent.is_some(),
        );
        not_for(
            c,
            "mode",
            self.kind != InterfaceType::Macvlan && self.mode.is_some(),
        );
        not_for(
            c,
            "source",
            self.kind != InterfaceType::Mirror && self.source.is_some(),
        );
        if let Some(e) = &self.enslave {
            if let Some(p) = ifname_problem(e) {
                c.push(
                    f("enslave"),
                    p,
                    "give the name of a host interface, e.g. eth1",
                );
            }
            if self.bridge.as_deref() == Some(e.as_str()) {
                c.push(
                    f("enslave"),
                    "names the bridge itself",
                    "name the host interface to put on the bridge",
                );
            }
        }
        if self.kind == InterfaceType::Mirror
            && (!self.addresses.is_empty() || !self.routes.is_empty())
        {
            c.push(
                f("addresses"),
                "a mirror is receive-only and takes no addresses or routes",
                "remove addresses and routes from the mirror binding",
            );
        }
        let mut v4 = false;
        let mut v6 = false;
        for (i, a) in self.addresses.iter().enumerate() {
            match parse_cidr(a) {
                Ok(cidr) => {
                    v4 |= cidr.addr.is_ipv4();
                    v6 |= cidr.addr.is_ipv6();
                    if cidr.addr.is_unspecified() || cidr.addr.is_multicast() {
                        c.push(
                            format!("{at}.addresses[{i}]"),
                            format!("{a:?} is not a unicast address"),
                            "give the instrument's own address, e.g. 192.0.2.10/24",
                        );
                    }
                }
                Err(e) => c.push(
                    format!("{at}.addresses[{i}]"),
                    e,
                    "write it like 192.0.2.10/24",
                ),
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("{at}.routes[{i}]");
            let to = match parse_cidr(&r.to) {
                Ok(t) => Some(t),
                Err(e) => {
                    c.push(
                        format!("{at}.to"),
                        e,
                        "write it like 0.0.0.0/0 or 10.0.0.0/8",
                    );
                    None
                }
            };
            if let Some(via) = &r.via {
                match via.parse::<IpAddr>() {
                    Ok(gw) => {
                        if to.is_some_and(|t| t.addr.is_ipv4() != gw.is_ipv4()) {
                            c.push(
                                format!("{at}.via"),
                                format!("gateway {via} is not of the same family as {}", r.to),
                                "use an IPv4 gateway for an IPv4 route, IPv6 for IPv6",
                            );
                        }
                        let have = if gw.is_ipv4() { v4 } else { v6 };
                        if !have {
                            c.push(
                                format!("{at}.via"),
                                format!("gateway {via} cannot be reached: the binding has no address of its family"),
                                "add an address in the gateway's network",
                            );
                        }
                    }
                    Err(_) => c.push(
                        format!("{at}.via"),
                        format!("{via:?} is not an IP address"),
                        "give the gateway's address",
                    ),
                }
            }
        }
        if let Some(m) = self.mtu
            && !(68..=65535).contains(&m)
        {
            c.push(
                f("mtu"),
                format!("{m} is not between 68 and 65535"),
                "give an MTU like 1500",
            );
        }
    }
}

/// Checks an instrument's bindings against its manifest: every declared
/// role bound, no undeclared role, the role's type, and that a passive or
/// receive-only role gets nothing that can send. `at` names the instrument
/// in field paths.
pub(crate) fn validate_against(
    at: &str,
    bindings: &BTreeMap<String, Binding>,
    m: &Manifest,
    c: &mut Collector,
) {
    for role in bindings.keys() {
        if m.interface(role).is_none() {
            let declared: Vec<&str> = m.interfaces.iter().map(|i| i.role.as_str()).collect();
            c.push(
                format!("{at}.interfaces.{role}"),
                format!("image {:?} declares no interface role {role:?}", m.name),
                if declared.is_empty() {
                    "remove it: the image needs no interfaces".to_string()
                } else {
                    format!("bind one of the image's roles: {}", declared.join(", "))
                },
            );
        }
    }
    for req in &m.interfaces {
        let Some(b) = bindings.get(&req.role) else {
            c.push(
                format!("{at}.interfaces.{}", req.role),
                format!(
                    "image {:?} needs role {:?} ({}) and it is not bound",
                    m.name, req.role, req.description
                ),
                format!(
                    "add [instrument.interfaces.{}] with type = \"{}\"",
                    req.role, req.kind
                ),
            );
            continue;
        };
        if b.kind != req.kind {
            c.push(
                format!("{at}.interfaces.{}.type", req.role),
                format!(
                    "role {:?} of image {:?} is a {} role",
                    req.role, m.name, req.kind
                ),
                format!("bind it with type = \"{}\"", req.kind),
            );
        }
        let sends = b.kind != InterfaceType::Mirror;
        let may_send = m.network == NetworkAccess::Active
            && req.capabilities.contains(&InterfaceCapability::Tx);
        if sends && !may_send {
            c.push(
                format!("{at}.interfaces.{}", req.role),
                format!(
                    "a {} binding can send, and role {:?} may only receive",
                    b.kind, req.role
                ),
                "bind receive-only roles as mirrors",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Invalid;

    fn check(text: &str) -> Result<(), Invalid> {
        let b: Binding = toml::from_str(text).expect("parses");
        let mut c = Collector::default();
        b.check("i.interfaces.seg0", &mut c);
        c.finish("binding")
    }

    fn fields(text: &str) -> Vec<String> {
        match check(text) {
            Ok(()) => vec![],
            Err(e) => e.errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.1/24").unwrap().prefix, 24);
        assert!(parse_cidr("2001:db8::1/64").unwrap().addr.is_ipv6());
        assert!(parse_cidr("10.0.0.1").unwrap_err().contains("prefix"));
        assert!(
            parse_cidr("10.0.0.1/33")
                .unwrap_err()
                .contains("between 0 and 32")
        );
        assert!(parse_cidr("10.0.0/8").unwrap_err().contains("not an IP"));
    }

    #[test]
    fn good_bindings() {
        assert_eq!(
            fields(
                "type = \"phy\"\ndevice = \"eth1\"\naddresses = [\"192.0.2.2/24\"]\nroutes = [{ to = \"0.0.0.0/0\", via = \"192.0.2.1\" }]\nmtu = 1400\n"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            fields("type = \"bridge\"\nbridge = \"br0\"\ncreate = true\nenslave = \"eth1\"\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            fields("type = \"macvlan\"\nparent = \"eth0\"\nmode = \"vepa\"\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            fields("type = \"mirror\"\nsource = \"eth3\"\npromiscuous = true\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn problems_name_their_field() {
        assert_eq!(fields("type = \"phy\"\n"), vec!["i.interfaces.seg0.device"]);
        assert_eq!(
            fields("type = \"macvlan\"\nparent = \"eth0\"\nsource = \"eth1\"\n"),
            vec!["i.interfaces.seg0.source"]
        );
        assert_eq!(
            fields("type = \"bridge\"\nbridge = \"averyveryverylongbridge\"\n"),
            vec!["i.interfaces.seg0.bridge"]
        );
        assert_eq!(
            fields("type = \"phy\"\ndevice = \"eth1\"\naddresses = [\"10.0.0.300/24\"]\n"),
            vec!["i.interfaces.seg0.addresses[0]"]
        );
        assert_eq!(
            fields(
                "type = \"phy\"\ndevice = \"eth1\"\naddresses = [\"10.0.0.2/24\"]\nroutes = [{ to = \"::/0\", via = \"10.0.0.1\" }]\n"
            ),
            vec!["i.interfaces.seg0.routes[0].via"]
        );
        assert_eq!(
            fields("type = \"mirror\"\nsource = \"eth1\"\naddresses = [\"10.0.0.2/24\"]\n"),
            vec!["i.interfaces.seg0.addresses"]
        );
        assert_eq!(
            fields("type = \"phy\"\ndevice = \"eth1\"\nmtu = 20\n"),
            vec!["i.interfaces.seg0.mtu"]
        );
        let bad: Result<Binding, _> =
            toml::from_str("type = \"phy\"\ndevice = \"eth1\"\nvlan = 3\n");
        assert!(bad.unwrap_err().to_string().contains("vlan"));
    }

    fn manifest(network: &str, roles: &str) -> Manifest {
        Manifest::parse_valid(&format!(
            "name = \"ids\"\nversion = \"1.0.0\"\nentrypoint = [\"/x\"]\nnetwork = \"{network}\"\n{roles}"
        ))
        .unwrap()
    }

    fn against(m: &Manifest, bindings: &str) -> Vec<String> {
        let b: BTreeMap<String, Binding> = toml::from_str(bindings).unwrap();
        let mut c = Collector::default();
        validate_against("instrument[0]", &b, m, &mut c);
        match c.finish("x") {
            Ok(()) => vec![],
            Err(e) => e
                .errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.problem))
                .collect(),
        }
    }

    #[test]
    fn roles_must_match_the_manifest() {
        let m = manifest(
            "active",
            "[[interfaces]]\nrole = \"seg0\"\ntype = \"bridge\"\ncapabilities = [\"rx\", \"tx\"]\n",
        );
        assert!(against(&m, "[seg0]\ntype = \"bridge\"\nbridge = \"br0\"\n").is_empty());
        let e = against(&m, "");
        assert!(e[0].contains("seg0") && e[0].contains("not bound"), "{e:?}");
        let e = against(
            &m,
            "[seg0]\ntype = \"bridge\"\nbridge = \"br0\"\n[extra0]\ntype = \"phy\"\ndevice = \"eth9\"\n",
        );
        assert!(
            e[0].contains("declares no interface role \"extra0\""),
            "{e:?}"
        );
        let e = against(&m, "[seg0]\ntype = \"macvlan\"\nparent = \"eth0\"\n");
        assert!(e[0].contains("seg0.type"), "{e:?}");
    }

    #[test]
    fn receive_only_roles_get_only_mirrors() {
        let m = manifest(
            "passive",
            "[[interfaces]]\nrole = \"tap0\"\ntype = \"mirror\"\ncapabilities = [\"rx\"]\n",
        );
        assert!(against(&m, "[tap0]\ntype = \"mirror\"\nsource = \"eth1\"\n").is_empty());
        let e = against(&m, "[tap0]\ntype = \"phy\"\ndevice = \"eth1\"\n");
        assert!(e.iter().any(|e| e.contains("can send")), "{e:?}");
    }
}
