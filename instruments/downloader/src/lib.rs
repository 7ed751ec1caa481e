//! The downloader instrument: the only instrument with a route to the
//! Internet. It keeps fetching its resources, verifies each new version
//! (a pinned sha256, or minisign-signed metadata whose version only goes
//! up and that has not expired; the length and hash checked as the body
//! comes), stores it atomically with the previous versions, and announces
//! it. The platform verifies again before any consumer gets it.
//!
//! - [`config`]: the resources and how each is verified;
//! - [`verify`] (in `outpost-protocol`): the decisions that need no network;
//! - [`fetch`]: HTTP with the limits an untrusted server needs;
//! - [`store`]: artifacts and state in persistent storage.

pub mod config;
pub mod fetch;
pub mod store;

/// The decisions that need no network, shared with the platform, which
/// verifies again what the downloader announces.
pub use outpost_protocol::artifacts::verify;

use std::time::SystemTime;

use config::{Resource, Verify, origin_of};
use fetch::{Client, FetchError};
use store::{Current, Store};
use verify::Refusal;

/// What one check of a resource found.
#[derive(Debug)]
pub enum Outcome {
    /// A new version, verified and stored.
    Fetched {
        version: String,
        sha256: String,
        length: u64,
        path: std::path::PathBuf,
        /// The signed metadata and its signature, when it was signed.
        signed: Option<(std::path::PathBuf, std::path::PathBuf)>,
    },
    /// Nothing new.
    Unchanged { version: Option<String> },
    /// Something came and was refused; nothing was stored.
    Refused(Refusal),
    /// The check did not get that far (network, server, disk).
    Failed(String),
}

/// Largest metadata document and signature.
const MAX_METADATA: u64 = 64 * 1024;

/// Checks resource `r` once.
pub async fn check(r: &Resource, client: &Client, store: &Store, now: SystemTime) -> Outcome {
    let tmp = store.tmp(&r.name);
    let out = match check_into(r, client, store, now, &tmp).await {
        Ok(o @ Outcome::Unchanged { .. }) => {
            store.confirm_current(&r.name);
            o
        }
        Ok(o) => o,
        Err(FetchError::Refused(why)) => Outcome::Refused(why),
        Err(FetchError::Failed(why)) => Outcome::Failed(why),
    };
    let _ = std::fs::remove_file(&tmp);
    out
}

async fn check_into(
    r: &Resource,
    client: &Client,
    store: &Store,
    now: SystemTime,
    tmp: &std::path::Path,
) -> Result<Outcome, FetchError> {
    let mut state = store.state(&r.name);
    let limit = r.max_size.as_u64();
    let unchanged = |state: store::State| Outcome::Unchanged {
        version: state.current.map(|c| c.version),
    };
    let mut validators = fetch::Validators::default();
    let mut signed: Option<(Vec<u8>, String)> = None;
    let (version, expected_sha, expected_len, url) = match &r.verify {
        Verify::Sha256(pin) => {
            // The pinned content is here already: nothing to ask.
            if state.current.as_ref().is_some_and(|c| &c.sha256 == pin) {
                return Ok(unchanged(state));
            }
            (pin[..12].to_string(), pin.clone(), None, r.url.clone())
        }
        Verify::Keys(_) => {
            let known = state.current.is_some().then_some(&state.validators);
            let Some((doc, v)) = client.small(&r.url, MAX_METADATA, known).await? else {
                return Ok(unchanged(state));
            };
            validators = v;
            let sig_url = format!("{}.minisig", r.url);
            let (sig, _) = client
                .small(&sig_url, MAX_METADATA, None)
                .await?
                .ok_or_else(|| {
                    FetchError::Failed(format!("{sig_url}: not modified without asking"))
                })?;
            let sig = String::from_utf8(sig).map_err(|_| {
                FetchError::Refused(Refusal::Metadata("the signature is not text".into()))
            })?;
            let keys = config::Config::keys(r);
            // The same metadata as the current version is no news.
            if let Some(c) = &state.current
                && let Ok(m) = serde_json::from_slice::<verify::Metadata>(&doc)
                && m.version == c.version
                && m.sha256 == c.sha256
            {
                verify::check_metadata(&doc, &sig, &keys, &r.name, None, now)
                    .map_err(FetchError::Refused)?;
                state.validators = validators;
                let _ = store.save_state(&r.name, &state);
                return Ok(unchanged(state));
            }
            let m =
                verify::check_metadata(&doc, &sig, &keys, &r.name, state.highest.as_deref(), now)
                    .map_err(FetchError::Refused)?;
            let base =
                reqwest::Url::parse(&r.url).map_err(|e| FetchError::Failed(e.to_string()))?;
            let url = base.join(&m.url).map_err(|e| {
                FetchError::Refused(Refusal::Metadata(format!("url {:?}: {e}", m.url)))
            })?;
            let (to, from) = (origin_of(url.as_str()), origin_of(&r.url));
            let allowed = r
                .allow_redirects_to
                .iter()
                .filter_map(|o| origin_of(o))
                .collect::<Vec<_>>();
            if to != from && !to.as_ref().is_some_and(|t| allowed.contains(t)) {
                return Err(FetchError::Refused(Refusal::Redirect {
                    to: url.to_string(),
                    origin: from.unwrap_or_default(),
                }));
            }
            if m.length > limit {
                return Err(FetchError::Refused(Refusal::TooLarge { limit }));
            }
            signed = Some((doc, sig));
            (m.version, m.sha256, Some(m.length), url.to_string())
        }
    };
    let cap = expected_len.unwrap_or(limit);
    let Some(body) = client.to_file(&url, None, cap, tmp).await? else {
        return Ok(unchanged(state));
    };
    if let Some(len) = expected_len
        && body.length != len
    {
        return Err(FetchError::Refused(Refusal::Length {
            length: len,
            got: body.length,
        }));
    }
    if body.sha256 != expected_sha {
        return Err(FetchError::Refused(Refusal::Hash {
            expected: expected_sha,
            got: body.sha256,
        }));
    }
    let path = store
        .commit(
            &r.name,
            &version,
            tmp,
            r.keep,
            signed.as_ref().map(|(d, s)| (d.as_slice(), s.as_str())),
        )
        .map_err(FetchError::Failed)?;
    if matches!(r.verify, Verify::Keys(_)) {
        state.highest = Some(version.clone());
    }
    state.validators = validators;
    state.current = Some(Current {
        version: version.clone(),
        sha256: body.sha256.clone(),
        length: body.length,
    });
    store
        .save_state(&r.name, &state)
        .map_err(FetchError::Failed)?;
    Ok(Outcome::Fetched {
        signed: signed.map(|_| store.meta(&r.name, &version)),
        version,
        sha256: body.sha256,
        length: body.length,
        path,
    })
}

#[cfg(test)]
mod tests;
