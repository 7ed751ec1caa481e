//! NATS decentralized-auth JWTs (v2): the operator, the accounts and the
//! users the hub trusts, signed with nkeys.
//!
//! Written here rather than taken from a crate: `nats-jwt` cannot make an
//! operator JWT nor carry revocations, and `nats-io-jwt` is a pre-1.0
//! work in progress. The encoding is small: `base64url(header) "."
//! base64url(claims) "." base64url(ed25519 signature)`, with the claims'
//! `jti` the base32 of their SHA-512/256 hash. nats-server itself is the
//! test: it accepts these or refuses the connection.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Digest;

/// What a user may publish and subscribe to.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The operator's JWT, self-signed, naming the system account.
pub fn operator(op: &KeyPair, name: &str, system_account: &str) -> String {
    encode(
        op,
        &op.public_key(),
        name,
        json!({
            "system_account": system_account,
            "type": "operator",
            "version": 2,
        }),
    )
}

/// An account's JWT, signed by the operator. `jetstream` enables it with
/// no limits but the server's; `revoked` maps user public keys to the
/// time (s) before which their JWTs no longer count.
pub fn account(
    op: &KeyPair,
    account: &str,
    name: &str,
    signing_keys: &[String],
    jetstream: bool,
    revoked: &BTreeMap<String, i64>,
) -> String {
    let js = if jetstream { -1 } else { 0 };
    let mut nats = json!({
        "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": js, "disk_storage": js, "streams": js, "consumer": js,
        },
        "default_permissions": { "pub": {}, "sub": {} },
        "type": "account",
        "version": 2,
    });
    if !signing_keys.is_empty() {
        nats["signing_keys"] = json!(signing_keys);
    }
    if !revoked.is_empty() {
        nats["revocations"] = json!(revoked);
    }
    encode(op, account, name, nats)
}

/// A user's JWT for public key `user`, signed by `signer` (the account's
/// own key, or one of its signing keys; then `issuer_account` names it).
pub fn user(
    signer: &KeyPair,
    issuer_account: &str,
    user: &str,
    name: &str,
    perms: &Permissions,
) -> String {
    let mut nats = json!({
        "pub": {}, "sub": {},
        "subs": -1, "data": -1, "payload": -1,
        "type": "user",
        "version": 2,
    });
    if !perms.publish.is_empty() {
        nats["pub"] = json!({ "allow": perms.publish });
    }
    if !perms.subscribe.is_empty() {
        nats["sub"] = json!({ "allow": perms.subscribe });
    }
    if signer.public_key() != issuer_account {
        nats["issuer_account"] = json!(issuer_account);
    }
    encode(signer, user, name, nats)
}

#[derive(Serialize)]
struct Claims<'a> {
    #[serde(skip_serializing_if = "String::is_empty")]
    jti: String,
    iat: i64,
    iss: String,
    name: &'a str,
    sub: &'a str,
    nats: Value,
}

fn encode(signer: &KeyPair, sub: &str, name: &str, nats: Value) -> String {
    let mut claims = Claims {
        jti: String::new(),
        iat: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        iss: signer.public_key(),
        name,
        sub,
        nats,
    };
    let unhashed = serde_json::to_vec(&claims).expect("claims serialize");
    let hash = sha2::Sha512_256::digest(&unhashed);
    claims.jti = data_encoding::BASE32_NOPAD.encode(&hash);
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
    let signed = format!("{header}.{body}");
    let sig = signer.sign(signed.as_bytes()).expect("a seed key signs");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The claims of a JWT, unverified (for tests and diagnostics).
pub fn claims_of(jwt: &str) -> Option<Value> {
    let body = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_jwt_is_signed_by_its_issuer_and_names_its_account() {
        let acct = KeyPair::new_account();
        let signing = KeyPair::new_account();
        let u = KeyPair::new_user();
        let perms = Permissions {
            publish: vec!["fleet.in.a.>".into()],
            subscribe: vec!["fleet.sensor.a.>".into()],
        };
        let jwt = user(&signing, &acct.public_key(), &u.public_key(), "a", &perms);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signing
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
        let c = claims_of(&jwt).unwrap();
        assert_eq!(c["iss"], signing.public_key());
        assert_eq!(c["sub"], u.public_key());
        assert_eq!(c["nats"]["issuer_account"], acct.public_key());
        assert_eq!(c["nats"]["pub"]["allow"][0], "fleet.in.a.>");
        assert_eq!(c["jti"].as_str().unwrap().len(), 52);
    }
}
