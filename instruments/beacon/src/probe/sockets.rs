//! TCP, UDP and DNS attempts: the hello on a socket, the answer judged.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use super::{ANSWER_CAP, Verdict, bind_dev, judge};
use crate::proof::{self, Key};

/// A TCP connection to `a`, leaving by `dev`.
pub(crate) async fn connect_tcp(dev: Option<&str>, a: SocketAddr) -> io::Result<TcpStream> {
    let sock = if a.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    bind_dev(SockRef::from(&sock), dev)?;
    sock.connect(a).await
}

pub(crate) async fn tcp(
    dev: Option<&str>,
    a: SocketAddr,
    nonce: &str,
    key: &Key,
) -> io::Result<Verdict> {
    let s = connect_tcp(dev, a).await?;
    hello_exchange(s, nonce, key, "tcp").await
}

/// Sends the hello on a connected stream and judges the line that comes
/// back; `what` says how it got there ("tcp", "connect via …").
pub(crate) async fn hello_exchange(
    mut s: impl AsyncRead + AsyncWrite + Unpin,
    nonce: &str,
    key: &Key,
    what: &str,
) -> io::Result<Verdict> {
    s.write_all(proof::hello(nonce).as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    // Until a line, the end, or the round's timeout (which the caller
    // holds; what was read so far is lost then, which is fine: no proof).
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(Verdict::blocked(format!(
                    "{what}: connected, then reset after {} bytes (a firewall or proxy cut it)",
                    buf.len()
                )));
            }
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.contains(&b'\n') || buf.len() >= ANSWER_CAP {
            break;
        }
    }
    Ok(judge(key, nonce, &buf, what))
}

pub(crate) async fn udp(
    dev: Option<&str>,
    a: SocketAddr,
    nonce: &str,
    key: &Key,
) -> io::Result<Verdict> {
    let s = connected_udp(dev, a).await?;
    s.send(proof::hello(nonce).as_bytes()).await?;
    let mut buf = vec![0u8; ANSWER_CAP];
    let n = s.recv(&mut buf).await?;
    Ok(judge(key, nonce, &buf[..n], "udp"))
}

async fn connected_udp(dev: Option<&str>, a: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = if a.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any).await?;
    bind_dev(SockRef::from(&s), dev)?;
    s.connect(a).await?;
    Ok(s)
}

/// A TXT query for `<nonce>.<zone>`.
pub fn dns_query(id: u16, nonce: &str, zone: &str) -> io::Result<Vec<u8>> {
    use simple_dns::{CLASS, Name, Packet, PacketFlag, Question, TYPE};
    let qname = format!("{nonce}.{zone}");
    let mut p = Packet::new_query(id);
    p.set_flags(PacketFlag::RECURSION_DESIRED);
    p.questions.push(Question::new(
        Name::new(&qname).map_err(io::Error::other)?,
        TYPE::TXT.into(),
        CLASS::IN.into(),
        false,
    ));
    p.build_bytes_vec().map_err(io::Error::other)
}

/// Judges a DNS answer to [`dns_query`].
pub fn judge_dns(key: &Key, nonce: &str, answer: &[u8]) -> Verdict {
    use simple_dns::{Packet, rdata::RData};
    let p = match Packet::parse(answer) {
        Ok(p) => p,
        Err(e) => {
            return Verdict::blocked(format!(
                "dns: an answer that is not DNS ({e}): {}",
                proof::excerpt(answer)
            ));
        }
    };
    let found = p.answers.iter().find_map(|rr| match &rr.rdata {
        RData::TXT(t) => t.attributes().remove(proof::TXT_KEY).flatten(),
        _ => None,
    });
    match found {
        Some(v) => judge(
            key,
            nonce,
            format!("{} {v}", proof::REPLY).as_bytes(),
            "dns",
        ),
        None => Verdict::blocked(format!(
            "dns: the resolver answered {:?} with {} records and no canary proof",
            p.rcode(),
            p.answers.len()
        )),
    }
}

pub(crate) async fn dns(
    dev: Option<&str>,
    zone: &str,
    resolver: SocketAddr,
    nonce: &str,
    key: &Key,
) -> io::Result<Verdict> {
    let s = connected_udp(dev, resolver).await?;
    let id: u16 = rand::random();
    s.send(&dns_query(id, nonce, zone)?).await?;
    let mut buf = vec![0u8; ANSWER_CAP];
    loop {
        let n = s.recv(&mut buf).await?;
        // An answer to another query (a late one) is not ours.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return Ok(judge_dns(key, nonce, &buf[..n]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::beacon::{Level, Outcome};

    fn key() -> Key {
        Key::from_hex("00112233445566778899aabbccddeeff").unwrap()
    }

    #[test]
    fn a_dns_answer_with_the_txt_proof_is_an_escape_and_nxdomain_is_not() {
        use simple_dns::{
            CLASS, Name, Packet, RCODE, ResourceRecord,
            rdata::{RData, TXT},
        };
        let n = proof::nonce();
        let q = dns_query(7, &n, "canary.example").unwrap();
        let parsed = Packet::parse(&q).unwrap();
        let mut reply = parsed.clone().into_reply();
        let value = key().prove(&n);
        let txt = TXT::new()
            .with_attribute(proof::TXT_KEY, Some(value.as_bytes()))
            .unwrap();
        let qname = format!("{n}.canary.example");
        reply.answers.push(ResourceRecord::new(
            Name::new(&qname).unwrap(),
            CLASS::IN,
            0,
            RData::TXT(txt),
        ));
        let v = judge_dns(&key(), &n, &reply.build_bytes_vec().unwrap());
        assert_eq!(
            (v.outcome, v.level),
            (Outcome::Escaped, Level::Proven),
            "{v:?}"
        );
        let mut nx = parsed.into_reply();
        *nx.rcode_mut() = RCODE::NameError;
        let v = judge_dns(&key(), &n, &nx.build_bytes_vec().unwrap());
        assert_eq!(v.outcome, Outcome::Blocked);
        assert!(v.detail.contains("NameError"), "{}", v.detail);
    }
}
