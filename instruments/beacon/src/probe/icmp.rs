//! ICMP echo: a reply carrying the nonce from the target's address is an
//! escape at the `reachable` level (an echo has no room for a proof);
//! an unreachable or time exceeded that quotes our request is `blocked`,
//! with the router that sent it.
//!
//! IPv4 and IPv6 use raw sockets (the `net_raw` capability). An IPv4 raw
//! socket reads the IP header too, so the source is in the packet; an
//! ICMPv6 one reads the ICMPv6 message only and the source comes from
//! `recvfrom`. The kernel fills in the ICMPv6 checksum, whose
//! pseudo-header it alone knows.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use outpost_protocol::beacon::Level;
use socket2::{Domain, Protocol, Socket, Type};

use super::Verdict;

/// The internet checksum of `b`.
pub(crate) fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request carrying `payload`.
pub fn echo_request(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Judges one IPv4 packet a raw ICMP socket read; `None` if it is not
/// about our echo request.
pub fn judge_icmp(
    pkt: &[u8],
    target: Ipv4Addr,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Option<Verdict> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    if pkt.len() < ihl + 8 || ihl < 20 {
        return None;
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let icmp = &pkt[ihl..];
    let ours = |h: &[u8]| {
        h.len() >= 8 && h[0] == 8 && h[4..6] == id.to_be_bytes() && h[6..8] == seq.to_be_bytes()
    };
    match icmp[0] {
        0 if src == target && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes() => {
            if &icmp[8..] == payload {
                Some(Verdict::escaped(
                    Level::Reachable,
                    format!(
                        "icmp: echo reply from {src} with our nonce; the canary's address is reachable (ICMP cannot prove it is the canary)"
                    ),
                ))
            } else {
                Some(Verdict::blocked(format!(
                    "icmp: an echo reply from {src} that does not carry our nonce"
                )))
            }
        }
        3 | 11 => {
            // The original header and 8 bytes of our request follow.
            let inner = icmp.get(8..)?;
            let iihl = usize::from(*inner.first()? & 0x0f) * 4;
            if !ours(inner.get(iihl..)?) {
                return None;
            }
            let what = if icmp[0] == 3 {
                format!("destination unreachable (code {})", icmp[1])
            } else {
                "time exceeded".to_string()
            };
            Some(Verdict::blocked(format!("icmp: {what} from {src}")))
        }
        _ => None,
    }
}

/// An ICMPv6 echo request carrying `payload`, checksum left to the
/// kernel.
pub fn echo_request_v6(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![128, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Judges one ICMPv6 message from `src` that a raw ICMPv6 socket read;
/// `None` if it is not about our echo request.
pub fn judge_icmpv6(
    msg: &[u8],
    src: Ipv6Addr,
    target: Ipv6Addr,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Option<Verdict> {
    if msg.len() < 8 {
        return None;
    }
    let ours = |h: &[u8]| {
        h.len() >= 8 && h[0] == 128 && h[4..6] == id.to_be_bytes() && h[6..8] == seq.to_be_bytes()
    };
    match msg[0] {
        129 if src == target && msg[4..6] == id.to_be_bytes() && msg[6..8] == seq.to_be_bytes() => {
            if &msg[8..] == payload {
                Some(Verdict::escaped(
                    Level::Reachable,
                    format!(
                        "icmpv6: echo reply from {src} with our nonce; the canary's address is reachable (ICMP cannot prove it is the canary)"
                    ),
                ))
            } else {
                Some(Verdict::blocked(format!(
                    "icmpv6: an echo reply from {src} that does not carry our nonce"
                )))
            }
        }
        1 | 3 => {
            // As much of our packet as fits follows: its 40-byte IPv6
            // header (extension headers are not expected on an echo), then
            // our ICMPv6 header.
            let inner = msg.get(8..)?;
            if inner.len() < 40 || inner[0] >> 4 != 6 || inner[6] != 58 {
                return None;
            }
            if !ours(&inner[40..]) {
                return None;
            }
            let what = if msg[0] == 1 {
                let why = match msg[1] {
                    0 => "no route to destination",
                    1 => "administratively prohibited",
                    3 => "address unreachable",
                    4 => "port unreachable",
                    5 => "source address failed policy",
                    6 => "reject route",
                    _ => "unreachable",
                };
                format!("destination unreachable (code {}: {why})", msg[1])
            } else {
                "time exceeded".to_string()
            };
            Some(Verdict::blocked(format!("icmpv6: {what} from {src}")))
        }
        _ => None,
    }
}

/// One echo to `target`, answered within `limit`.
pub fn echo(
    dev: Option<&str>,
    target: IpAddr,
    nonce: &str,
    limit: Duration,
) -> io::Result<Verdict> {
    let (domain, proto) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let s = Socket::new(domain, Type::RAW, Some(proto))?;
    if let Some(d) = dev {
        s.bind_device(Some(d.as_bytes()))?;
    }
    let (id, seq): (u16, u16) = (rand::random(), rand::random());
    let req = match target {
        IpAddr::V4(_) => echo_request(id, seq, nonce.as_bytes()),
        IpAddr::V6(_) => echo_request_v6(id, seq, nonce.as_bytes()),
    };
    s.send_to(&req, &SocketAddr::new(target, 0).into())?;
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Verdict::blocked(format!(
                "icmp: no echo reply from {target} within {}",
                humantime::format_duration(limit)
            )));
        }
        s.set_read_timeout(Some(left))?;
        let got = match target {
            IpAddr::V4(t) => std::io::Read::read(&mut &s, &mut buf)
                .map(|n| judge_icmp(&buf[..n], t, id, seq, nonce.as_bytes())),
            IpAddr::V6(t) => {
                nix::sys::socket::recvfrom::<nix::sys::socket::SockaddrIn6>(s.as_raw_fd(), &mut buf)
                    .map_err(io::Error::from)
                    .map(|(n, from)| {
                        from.and_then(|f| {
                            judge_icmpv6(&buf[..n], f.ip(), t, id, seq, nonce.as_bytes())
                        })
                    })
            }
        };
        match got {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::beacon::Outcome;

    #[test]
    fn echo_replies_are_matched_by_id_sequence_source_and_nonce() {
        let target = Ipv4Addr::new(10, 80, 0, 2);
        let req = echo_request(0x1234, 7, b"nonce");
        assert_eq!(checksum(&req), 0, "a packet with its checksum sums to zero");
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 80, 0, 2, 10, 79, 0, 2,
        ];
        let mut reply = req.clone();
        reply[0] = 0;
        ip.extend_from_slice(&reply);
        let v = judge_icmp(&ip, target, 0x1234, 7, b"nonce").unwrap();
        assert_eq!((v.outcome, v.level), (Outcome::Escaped, Level::Reachable));
        assert!(
            judge_icmp(&ip, target, 0x9999, 7, b"nonce").is_none(),
            "another prober's reply"
        );
        assert!(judge_icmp(&ip, Ipv4Addr::new(10, 80, 0, 3), 0x1234, 7, b"nonce").is_none());
        // A router's unreachable, quoting our request.
        let mut unreach = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 79, 0, 1, 10, 79, 0, 2,
        ];
        unreach.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
        unreach.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 79, 0, 2, 10, 80, 0, 2,
        ]);
        unreach.extend_from_slice(&req[..8]);
        let v = judge_icmp(&unreach, target, 0x1234, 7, b"nonce").unwrap();
        assert_eq!(v.outcome, Outcome::Blocked);
        assert!(
            v.detail.contains("unreachable (code 1) from 10.79.0.1"),
            "{}",
            v.detail
        );
        assert!(judge_icmp(&[0x45], target, 1, 1, b"").is_none());
    }

    #[test]
    fn icmpv6_echo_replies_and_errors_are_matched_like_v4() {
        let target: Ipv6Addr = "fd80::2".parse().unwrap();
        let req = echo_request_v6(0x4242, 9, b"nonce");
        let mut reply = req.clone();
        reply[0] = 129;
        let v = judge_icmpv6(&reply, target, target, 0x4242, 9, b"nonce").unwrap();
        assert_eq!((v.outcome, v.level), (Outcome::Escaped, Level::Reachable));
        assert!(v.detail.contains("fd80::2"), "{}", v.detail);
        // Another prober's reply, another source, a reply without our nonce.
        assert!(judge_icmpv6(&reply, target, target, 0x4243, 9, b"nonce").is_none());
        let other: Ipv6Addr = "fd80::3".parse().unwrap();
        assert!(judge_icmpv6(&reply, other, target, 0x4242, 9, b"nonce").is_none());
        let v = judge_icmpv6(&reply, target, target, 0x4242, 9, b"other").unwrap();
        assert_eq!(v.outcome, Outcome::Blocked);
        // Our own request, seen on the socket (a loopback echo), is not a reply.
        assert!(judge_icmpv6(&req, target, target, 0x4242, 9, b"nonce").is_none());
        // A router's "no route", quoting our packet: IPv6 header, then ours.
        let router: Ipv6Addr = "fd79::1".parse().unwrap();
        let mut unreach = vec![1, 0, 0, 0, 0, 0, 0, 0];
        let mut ip6 = vec![0x60, 0, 0, 0, 0, 13, 58, 64];
        ip6.extend_from_slice(&"fd79::2".parse::<Ipv6Addr>().unwrap().octets());
        ip6.extend_from_slice(&target.octets());
        unreach.extend_from_slice(&ip6);
        unreach.extend_from_slice(&req);
        let v = judge_icmpv6(&unreach, router, target, 0x4242, 9, b"nonce").unwrap();
        assert_eq!(v.outcome, Outcome::Blocked);
        assert!(
            v.detail.contains("no route to destination") && v.detail.contains("fd79::1"),
            "{}",
            v.detail
        );
        // The same error about someone else's echo is not ours.
        assert!(judge_icmpv6(&unreach, router, target, 0x1111, 9, b"nonce").is_none());
        // Neighbour discovery and short junk are ignored.
        assert!(judge_icmpv6(&[135, 0, 0, 0, 0, 0, 0, 0], router, target, 1, 1, b"").is_none());
        assert!(judge_icmpv6(&[129], target, target, 1, 1, b"").is_none());
    }

    /// A real echo over loopback, both families: what a probe on the host
    /// sees when the target answers.
    #[test]
    fn a_loopback_echo_is_reachable_on_v4_and_v6() {
        for target in ["127.0.0.1", "::1"] {
            let v = echo(
                None,
                target.parse().unwrap(),
                "loopbacknonce",
                Duration::from_secs(2),
            )
            .unwrap();
            assert_eq!(
                (v.outcome, v.level),
                (Outcome::Escaped, Level::Reachable),
                "{target}: {}",
                v.detail
            );
        }
    }
}
