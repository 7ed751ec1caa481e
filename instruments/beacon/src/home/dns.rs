//! Home's DNS answers: a TXT record with the proof for `<nonce>.<zone>`.

use std::sync::Arc;

use outpost_protocol::beacon::Channel;
use tokio::net::UdpSocket;

use super::{Home, Streak, Tally};
use crate::proof;

impl Home {
    /// Answers TXT queries for `<nonce>.<zone>`; returns only when the
    /// socket is broken (an answer that cannot be sent is counted).
    pub async fn serve_dns(self: Arc<Self>, s: UdpSocket) -> std::io::Result<()> {
        let mut buf = [0u8; 1500];
        let mut streak = Streak::default();
        loop {
            let (n, peer) = match s.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    self.failed(Channel::Dns, None, "receive", &e);
                    if streak.failed() {
                        return Err(e);
                    }
                    continue;
                }
            };
            streak.ok();
            let Some((answer, nonce)) = self.dns_answer(&buf[..n]) else {
                self.bump(Channel::Dns, Tally::Refused);
                continue;
            };
            let tally = if nonce.is_some() {
                Tally::Hello
            } else {
                Tally::Refused
            };
            self.bump(Channel::Dns, tally);
            match s.send_to(&answer, peer).await {
                Ok(_) => {
                    if let Some(nonce) = nonce {
                        self.record(Channel::Dns, peer, &nonce);
                    }
                }
                Err(e) => self.failed(Channel::Dns, Some(peer), "answer", &e),
            }
        }
    }

    /// The answer to one query, and the nonce it proved if it did.
    pub fn dns_answer(&self, query: &[u8]) -> Option<(Vec<u8>, Option<String>)> {
        use simple_dns::rdata::{RData, TXT};
        use simple_dns::{CLASS, Packet, PacketFlag, RCODE, ResourceRecord};
        let q = Packet::parse(query).ok()?;
        if q.has_flags(PacketFlag::RESPONSE) {
            return None;
        }
        let question = q.questions.first()?.clone();
        let name = question.qname.to_string().to_ascii_lowercase();
        let mut reply = Packet::new_reply(q.id());
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        reply.questions.push(question.clone());
        let zone = self.zone.as_deref()?;
        let nonce = name
            .trim_end_matches('.')
            .strip_suffix(zone)
            .and_then(|n| n.strip_suffix('.'))
            .filter(|n| proof::is_nonce(n));
        let proved = match nonce {
            Some(n) => {
                let value = self.key.prove(n);
                let txt = TXT::new()
                    .with_attribute(proof::TXT_KEY, Some(value.as_bytes()))
                    .ok()?;
                reply.answers.push(ResourceRecord::new(
                    question.qname.clone(),
                    CLASS::IN,
                    0,
                    RData::TXT(txt),
                ));
                Some(n.to_string())
            }
            None => {
                *reply.rcode_mut() = if name.ends_with(zone) {
                    RCODE::NameError
                } else {
                    RCODE::Refused
                };
                None
            }
        };
        Some((reply.build_bytes_vec().ok()?, proved))
    }
}
