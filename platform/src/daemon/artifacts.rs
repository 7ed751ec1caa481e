//! Artifacts from a provider to its consumers, through the platform.
//!
//! A provider (a downloader) announces a verified version with the event
//! `artifact-fetched`. The platform trusts none of it: it installs only
//! what the sensor file routes from that provider, copies the file out of
//! the provider's persistent storage without following any link, and
//! verifies the copy itself against the route (a pinned sha256, or the
//! provider's signed metadata, checked with the route's keys: signature,
//! name, expiry, a version above every one installed before, length and
//! sha256). Only then is it placed, for each consumer, in
//! `<state>/artifacts/<consumer>/<name>/<version>` (whole or not at all),
//! which the consumer sees read-only at `/run/artifacts/<name>/`, and the
//! consumer is told (`outpost.i.<consumer>.artifact`). Every install and
//! refusal is recorded and is an event.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;
use outpost_protocol::artifacts::verify::{self, Key, Refusal};
use outpost_protocol::artifacts::{ArtifactRoute, MOUNT};
use outpost_protocol::messages::{ArtifactNotice, schema};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// What a provider announced (`artifact-fetched`).
#[derive(Debug, Clone, Deserialize)]
pub struct Announced {
    pub resource: String,
    pub version: String,
    pub sha256: String,
    pub length: u64,
    /// Relative to its persistent storage.
    pub path: String,
    #[serde(default)]
    pub metadata: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
}

/// One install to do, with everything it needs (run as a blocking job).
#[derive(Debug)]
pub struct Job {
    pub route: ArtifactRoute,
    pub provider: String,
    /// The provider's persistent storage, as mounted on the host.
    pub provider_storage: PathBuf,
    pub announced: Announced,
    /// Each consumer's artifact directory.
    pub consumers: Vec<(String, PathBuf)>,
    /// The highest version installed before.
    pub highest: Option<String>,
    /// Where the copy is verified before it is placed.
    pub staging: PathBuf,
    /// Told when the announcement is handled (then it is acknowledged; an
    /// outpostd that dies before hears it again after its restart).
    pub done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// An installed artifact, for its consumers' notices.
#[derive(Debug, Clone)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub consumers: Vec<String>,
}

impl Installed {
    /// Where a consumer finds it.
    pub fn path_inside(&self) -> String {
        format!("{MOUNT}/{}/{}", self.name, self.version)
    }
}

/// Why nothing was installed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Refused(Refusal),
    /// The provider's storage does not hold what it announced, or holds
    /// it as something else than a plain file.
    #[error("{0}")]
    Unreadable(String),
    #[error("{0}")]
    Io(String),
}

impl InstallError {
    pub fn reason(&self) -> &'static str {
        match self {
            InstallError::Refused(r) => r.kind(),
            InstallError::Unreadable(_) => "unreadable",
            InstallError::Io(_) => "io",
        }
    }
}

/// Largest artifact the platform copies.
const MAX_ARTIFACT: u64 = 2 << 30;
/// Largest metadata document or signature.
const MAX_METADATA: u64 = 64 * 1024;
/// Versions kept per consumer and artifact.
const KEEP: usize = 2;

/// Opens `rel` below `root` without following any symbolic link and
/// refusing `..`: a provider controls its storage and could plant links
/// to anything on the host.
fn open_beneath(root: &Path, rel: &str) -> Result<File, InstallError> {
    let bad =
        |why: String| InstallError::Unreadable(format!("{rel:?} in the provider's storage {why}"));
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") || rel.starts_with('/') {
        return Err(bad("is not a plain relative path".into()));
    }
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir: OwnedFd =
        open(root, dir_flags, Mode::empty()).map_err(|e| bad(format!("cannot be reached: {e}")))?;
    for p in &parts[..parts.len() - 1] {
        dir = openat(&dir, *p, dir_flags, Mode::empty())
            .map_err(|e| bad(format!("cannot be followed at {p:?}: {e}")))?;
    }
    let last = parts[parts.len() - 1];
    let fd = openat(
        &dir,
        last,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| bad(format!("cannot be opened: {e}")))?;
    let f = File::from(fd);
    let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    Ok(f)
}

fn read_small(root: &Path, rel: &str) -> Result<Vec<u8>, InstallError> {
    let mut out = Vec::new();
    open_beneath(root, rel)?
        .take(MAX_METADATA + 1)
        .read_to_end(&mut out)
        .map_err(|e| InstallError::Unreadable(format!("{rel:?}: {e}")))?;
    if out.len() as u64 > MAX_METADATA {
        return Err(InstallError::Refused(Refusal::TooLarge {
            limit: MAX_METADATA,
        }));
    }
    Ok(out)
}

/// Removes what an install that died half-way left: the staging copies
/// and every consumer's unfinished `.<version>.tmp` (so `/run/artifacts`
/// only ever shows whole files).
pub fn recover(artifacts_root: &Path) {
    let _ = std::fs::remove_dir_all(artifacts_root.join(".staging"));
    let Ok(consumers) = std::fs::read_dir(artifacts_root) else {
        return;
    };
    for c in consumers.flatten() {
        let Ok(names) = std::fs::read_dir(c.path()) else {
            continue;
        };
        for n in names.flatten() {
            let Ok(files) = std::fs::read_dir(n.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    warn!(path = %f.path().display(), "removing a half-installed artifact");
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }
}

/// Copies, verifies and installs one announced artifact.
pub fn install(job: &Job, now: SystemTime) -> Result<Installed, InstallError> {
    let a = &job.announced;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| InstallError::Io(format!("{}: {e}", p.display()))
    };
    // The copy, hashed as it is written.
    let limit = a.length.min(MAX_ARTIFACT);
    let mut src = open_beneath(&job.provider_storage, &a.path)?;
    std::fs::create_dir_all(&job.staging).map_err(io(&job.staging))?;
    let staged = job
        .staging
        .join(format!("{}.{:08x}", job.route.name, rand::random::<u32>()));
    let copied = (|| {
        let mut out = File::create(&staged).map_err(io(&staged))?;
        let mut hash = Sha256::new();
        let mut length = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = src.read(&mut buf).map_err(io(&job.provider_storage))?;
            if n == 0 {
                break;
            }
            length += n as u64;
            if length > limit {
                return Err(InstallError::Refused(Refusal::Length {
                    length: a.length,
                    got: length,
                }));
            }
            hash.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io(&staged))?;
        }
        out.sync_all().map_err(io(&staged))?;
        Ok((hex::encode(hash.finalize()), length))
    })();
    let result = copied.and_then(|(sha, length)| {
        check(job, &sha, length, now)?;
        place(job, &staged, &sha)
    });
    let _ = std::fs::remove_file(&staged);
    result
}

/// The platform's own verdict on a copy with `sha` and `length`.
fn check(job: &Job, sha: &str, length: u64, now: SystemTime) -> Result<(), InstallError> {
    let a = &job.announced;
    let r = &job.route;
    if let Some(pin) = &r.sha256 {
        if sha != pin {
            return Err(InstallError::Refused(Refusal::Hash {
                expected: pin.clone(),
                got: sha.to_string(),
            }));
        }
        return Ok(());
    }
    let (Some(m), Some(s)) = (&a.metadata, &a.signature) else {
        return Err(InstallError::Refused(Refusal::Metadata(
            "the route wants signed metadata and the provider named none".into(),
        )));
    };
    let doc = read_small(&job.provider_storage, m)?;
    let sig = String::from_utf8(read_small(&job.provider_storage, s)?).map_err(|_| {
        InstallError::Refused(Refusal::Metadata("the signature is not text".into()))
    })?;
    let keys: Vec<Key> = r.keys.iter().filter_map(|k| Key::parse(k).ok()).collect();
    let meta = verify::check_metadata(&doc, &sig, &keys, r.resource(), job.highest.as_deref(), now)
        .map_err(InstallError::Refused)?;
    if meta.version != a.version {
        return Err(InstallError::Refused(Refusal::Metadata(format!(
            "the metadata says version {}, the provider announced {}",
            meta.version, a.version
        ))));
    }
    if meta.length != length {
        return Err(InstallError::Refused(Refusal::Length {
            length: meta.length,
            got: length,
        }));
    }
    if meta.sha256 != sha {
        return Err(InstallError::Refused(Refusal::Hash {
            expected: meta.sha256,
            got: sha.to_string(),
        }));
    }
    Ok(())
}

/// Puts the verified copy in each consumer's directory, whole or not at
/// all, and keeps the newest [`KEEP`] versions there.
fn place(job: &Job, staged: &Path, sha: &str) -> Result<Installed, InstallError> {
    let name = &job.route.name;
    let version = &job.announced.version;
    for (_, dir) in &job.consumers {
        let dir = dir.join(name);
        let io = |e: std::io::Error| InstallError::Io(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = dir.join(format!(".{version}.tmp"));
        std::fs::copy(staged, &tmp).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444)).map_err(io)?;
        }
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
        crate::failpoint::hit("artifact-mid-install");
        std::fs::rename(&tmp, dir.join(version)).map_err(io)?;
        let mut versions: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io)?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        versions.sort_by(|a, b| verify::version_cmp(b, a));
        for old in versions.iter().skip(KEEP) {
            let _ = std::fs::remove_file(dir.join(old));
        }
    }
    Ok(Installed {
        name: name.clone(),
        version: version.clone(),
        sha256: sha.to_string(),
        consumers: job.consumers.iter().map(|(c, _)| c.clone()).collect(),
    })
}

impl<R: crate::runtime::Runtime> super::Daemon<R> {
    /// A provider announced an artifact: install it if the sensor file
    /// routes it from there (as a blocking job).
    pub(super) fn on_artifact_announced(
        &mut self,
        from: String,
        payload: serde_json::Value,
        done: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let announced: Announced = match serde_json::from_value(payload) {
            Ok(a) => a,
            Err(e) => {
                warn!(provider = %from, "an artifact announcement that does not parse: {e}");
                return;
            }
        };
        let Some((_, spec)) = &self.desired else {
            return;
        };
        let Some(route) = spec
            .artifacts
            .iter()
            .find(|r| r.from == from && r.resource() == announced.resource)
            .cloned()
        else {
            info!(provider = %from, resource = %announced.resource, "an artifact no route takes; ignored");
            return;
        };
        let provides = self
            .wanted(&from)
            .and_then(|i| {
                self.images
                    .get(&self.db, &i.image, &i.version)
                    .ok()
                    .flatten()
            })
            .is_some_and(|(_, m)| m.artifacts.provides);
        let st = self.cfg.state.clone();
        let job = Job {
            consumers: route
                .to
                .iter()
                .map(|c| (c.clone(), st.artifacts(c)))
                .collect(),
            highest: self.db.artifact_highest(&route.name).ok().flatten(),
            provider_storage: st.instance(&from).join("persist"),
            staging: st.root().join("artifacts").join(".staging"),
            provider: from,
            route,
            announced,
            done,
        };
        if !provides {
            let why = InstallError::Refused(Refusal::Metadata(format!(
                "instrument {}'s image does not provide artifacts",
                job.provider
            )));
            self.on_artifact_done(job, Err(why));
            return;
        }
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = install(&job, SystemTime::now());
            let _ = tx.blocking_send(super::Command::ArtifactDone {
                job: Box::new(job),
                result,
            });
        });
    }

    /// Records an install or refusal, says so, and tells the consumers.
    pub(super) fn on_artifact_done(
        &mut self,
        mut job: Job,
        result: Result<Installed, InstallError>,
    ) {
        let done = job.done.take();
        let a = &job.announced;
        let mut rec = crate::db::ArtifactInstall {
            id: 0,
            at_ms: crate::db::now_ms(),
            name: job.route.name.clone(),
            version: a.version.clone(),
            sha256: a.sha256.clone(),
            provider: job.provider.clone(),
            consumers: Vec::new(),
            outcome: "installed".into(),
            reason: None,
            detail: String::new(),
        };
        match &result {
            Ok(done) => {
                info!(artifact = %done.name, version = %done.version, provider = %job.provider, consumers = ?done.consumers, "artifact verified and installed");
                rec.sha256 = done.sha256.clone();
                rec.consumers = done.consumers.clone();
                self.publish_event(
                    "artifact-installed",
                    schema::ARTIFACT_INSTALLED,
                    serde_json::json!({
                        "name": done.name, "version": done.version, "sha256": done.sha256,
                        "provider": job.provider, "consumers": done.consumers,
                    }),
                );
                for c in &done.consumers {
                    self.notify_artifact(c, done);
                }
            }
            Err(e) => {
                warn!(artifact = %job.route.name, version = %a.version, provider = %job.provider, reason = e.reason(), "artifact refused: {e}");
                rec.outcome = "refused".into();
                rec.reason = Some(e.reason().into());
                rec.detail = e.to_string();
                self.publish_event(
                    "artifact-refused",
                    schema::ARTIFACT_REFUSED,
                    serde_json::json!({
                        "name": job.route.name, "version": a.version, "provider": job.provider,
                        "reason": e.reason(), "detail": e.to_string(),
                    }),
                );
            }
        }
        if let Err(e) = self.db.add_artifact_install(&rec) {
            warn!("cannot record the artifact {}: {e}", rec.name);
        }
        if let Some(d) = done {
            let _ = d.send(());
        }
    }

    fn notify_artifact(&self, consumer: &str, done: &Installed) {
        let Some(bus) = self.control.clone() else {
            return;
        };
        let notice = ArtifactNotice {
            name: done.name.clone(),
            version: done.version.clone(),
            sha256: done.sha256.clone(),
            path: done.path_inside(),
        };
        let consumer = consumer.to_string();
        tokio::spawn(async move {
            if let Err(e) = bus.notify_artifact(&consumer, &notice).await {
                warn!(instrument = %consumer, "artifact notice not sent: {e}");
            }
        });
    }

    /// Tells a consumer that just connected the newest version installed
    /// of each artifact it is routed (it may have missed the notice).
    pub(super) fn renotify_artifacts(&self, consumer: &str) {
        let Some((_, spec)) = &self.desired else {
            return;
        };
        for r in spec
            .artifacts
            .iter()
            .filter(|r| r.to.iter().any(|t| t == consumer))
        {
            let dir = self.cfg.state.artifacts(consumer).join(&r.name);
            let mut versions: Vec<String> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter(|n| !n.starts_with('.'))
                        .collect()
                })
                .unwrap_or_default();
            versions.sort_by(|a, b| verify::version_cmp(b, a));
            let Some(newest) = versions.into_iter().next() else {
                continue;
            };
            let sha = std::fs::read(dir.join(&newest))
                .map(|b| hex::encode(Sha256::digest(&b)))
                .unwrap_or_default();
            let done = Installed {
                name: r.name.clone(),
                version: newest,
                sha256: sha,
                consumers: vec![consumer.to_string()],
            };
            self.notify_artifact(consumer, &done);
        }
    }
}

/// The durable consumer of announcements on `EVENTS`.
const ANNOUNCEMENTS: &str = "platform-artifacts";

/// Follows the providers' announcements (`artifact-fetched` on the
/// `EVENTS` stream, with a durable consumer, so one made while outpostd
/// was down is not missed) and hands each to the daemon, until
/// `shutdown`. A new bus client (nats-server restarted) is followed too.
pub async fn follow_announcements(
    bus: crate::messaging::shared::SharedBus,
    handle: super::Handle,
    shutdown: crate::shutdown::Shutdown,
) {
    use async_nats::jetstream::consumer::{self, pull};
    use futures::StreamExt;
    let mut wait = std::time::Duration::from_millis(500);
    loop {
        if shutdown.is_triggered() {
            return;
        }
        let follow = async {
            let b = bus.get().ok_or("the bus is not up yet")?;
            let stream = b
                .jetstream()
                .get_stream(outpost_protocol::subjects::EVENTS_STREAM)
                .await
                .map_err(|e| e.to_string())?;
            let c = stream
                .get_or_create_consumer(
                    ANNOUNCEMENTS,
                    pull::Config {
                        durable_name: Some(ANNOUNCEMENTS.into()),
                        filter_subject: format!(
                            "outpost.events.*.{}",
                            outpost_protocol::subjects::ARTIFACT_FETCHED
                        ),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: std::time::Duration::from_secs(30),
                        deliver_policy: consumer::DeliverPolicy::New,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            let mut msgs = c.messages().await.map_err(|e| e.to_string())?;
            while let Some(m) = msgs.next().await {
                let m = m.map_err(|e| e.to_string())?;
                if let Some((from, _)) = outpost_protocol::subjects::parse_event(&m.subject)
                    && let Ok(env) = outpost_protocol::Envelope::decode(&m.payload)
                {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let cmd = super::Command::ArtifactAnnounced {
                        from: from.to_string(),
                        payload: env.payload,
                        done: Some(tx),
                    };
                    if handle.send(cmd).await.is_err() {
                        return Ok(());
                    }
                    // Acknowledged once handled (installed, refused or not
                    // routed), and told "in progress" meanwhile; a daemon
                    // that dies first hears it again within `ack_wait`.
                    let mut rx = rx;
                    loop {
                        match tokio::time::timeout(std::time::Duration::from_secs(10), &mut rx)
                            .await
                        {
                            Ok(_) => break,
                            Err(_) => {
                                let _ = m.ack_with(async_nats::jetstream::AckKind::Progress).await;
                            }
                        }
                    }
                }
                let _ = m.ack().await;
            }
            Ok::<(), String>(())
        };
        tokio::select! {
            r = follow => {
                if let Err(e) = r {
                    tracing::debug!("artifact announcements: {e}; again in {wait:?}");
                }
            }
            _ = shutdown.triggered() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.triggered() => return,
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::artifacts::verify::test_signer::Signer;

    struct Setup {
        _dir: tempfile::TempDir,
        job: Job,
        signer: Signer,
    }

    /// A provider's storage holding version `v` of "escape-probe", signed.
    fn setup(body: &[u8], v: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (job, signer) = setup_in(dir.path(), body, v);
        Setup {
            _dir: dir,
            job,
            signer,
        }
    }

    /// … in `dir`.
    fn setup_in(dir: &Path, body: &[u8], v: &str) -> (Job, Signer) {
        let storage = dir.join("provider");
        let art = storage.join("downloader/artifacts/escape-probe");
        let meta = storage.join("downloader/meta/escape-probe");
        std::fs::create_dir_all(&art).unwrap();
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(art.join(v), body).unwrap();
        let signer = Signer::new();
        let sha = hex::encode(Sha256::digest(body));
        let doc = serde_json::to_vec(&verify::Metadata {
            name: "escape-probe".into(),
            version: v.into(),
            expires: humantime::format_rfc3339_seconds(
                SystemTime::now() + std::time::Duration::from_secs(3600),
            )
            .to_string(),
            sha256: sha.clone(),
            length: body.len() as u64,
            url: v.into(),
        })
        .unwrap();
        std::fs::write(meta.join(format!("{v}.json")), &doc).unwrap();
        std::fs::write(meta.join(format!("{v}.minisig")), signer.sign(&doc)).unwrap();
        let job = Job {
            route: ArtifactRoute {
                name: "escape-probe".into(),
                from: "dl".into(),
                resource: None,
                to: vec!["b1".into(), "b2".into()],
                sha256: None,
                keys: vec![signer.public().text.clone()],
            },
            provider: "dl".into(),
            provider_storage: storage,
            announced: Announced {
                resource: "escape-probe".into(),
                version: v.into(),
                sha256: sha,
                length: body.len() as u64,
                path: format!("downloader/artifacts/escape-probe/{v}"),
                metadata: Some(format!("downloader/meta/escape-probe/{v}.json")),
                signature: Some(format!("downloader/meta/escape-probe/{v}.minisig")),
            },
            consumers: vec![
                ("b1".into(), dir.join("artifacts/b1")),
                ("b2".into(), dir.join("artifacts/b2")),
            ],
            highest: None,
            staging: dir.join("staging"),
            done: None,
        };
        (job, signer)
    }

    fn reason(r: Result<Installed, InstallError>) -> &'static str {
        r.map(|_| ()).unwrap_err().reason()
    }

    #[test]
    fn a_signed_artifact_is_verified_again_and_installed_for_every_consumer() {
        let s = setup(b"new probe", "2.0.0");
        let now = SystemTime::now();
        let done = install(&s.job, now).unwrap();
        assert_eq!(done.path_inside(), "/run/artifacts/escape-probe/2.0.0");
        for (_, dir) in &s.job.consumers {
            let p = dir.join("escape-probe/2.0.0");
            assert_eq!(std::fs::read(&p).unwrap(), b"new probe");
        }
        assert_eq!(std::fs::read_dir(&s.job.staging).unwrap().count(), 0);
        let _ = &s.signer;
    }

    #[test]
    fn what_the_provider_lies_about_is_refused_and_nothing_installed() {
        let now = SystemTime::now();
        let nothing = |j: &Job| {
            j.consumers
                .iter()
                .all(|(_, d)| !d.join("escape-probe/2.0.0").exists())
        };

        // The file was swapped after the provider verified it.
        let s = setup(b"new probe", "2.0.0");
        std::fs::write(
            s.job.provider_storage.join(&s.job.announced.path),
            b"evil prob",
        )
        .unwrap();
        assert_eq!(reason(install(&s.job, now)), "hash");
        assert!(nothing(&s.job));

        // Longer than announced.
        let s = setup(b"new probe", "2.0.0");
        std::fs::write(
            s.job.provider_storage.join(&s.job.announced.path),
            b"new probe, and more",
        )
        .unwrap();
        assert_eq!(reason(install(&s.job, now)), "too-large");

        // A symbolic link planted where the file should be.
        let s = setup(b"new probe", "2.0.0");
        let p = s.job.provider_storage.join(&s.job.announced.path);
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
        assert_eq!(reason(install(&s.job, now)), "unreadable");
        assert!(nothing(&s.job));

        // A path that climbs out.
        let mut s = setup(b"new probe", "2.0.0");
        s.job.announced.path = "../../etc/passwd".into();
        assert_eq!(reason(install(&s.job, now)), "unreadable");

        // Signed by a key the route does not name.
        let mut s = setup(b"new probe", "2.0.0");
        s.job.route.keys = vec![Signer::new().public().text.clone()];
        assert_eq!(reason(install(&s.job, now)), "unknown-key");

        // Not above what was installed before.
        let mut s = setup(b"new probe", "2.0.0");
        s.job.highest = Some("2.0.0".into());
        assert_eq!(reason(install(&s.job, now)), "rollback");

        // A pinned route: only that sha256.
        let mut s = setup(b"new probe", "2.0.0");
        s.job.route.keys.clear();
        s.job.route.sha256 = Some(hex::encode(Sha256::digest(b"the pinned one")));
        assert_eq!(reason(install(&s.job, now)), "hash");
        assert!(nothing(&s.job));

        // Announced as another version than the metadata says.
        let mut s = setup(b"new probe", "2.0.0");
        s.job.announced.version = "3.0.0".into();
        assert_eq!(reason(install(&s.job, now)), "metadata");
    }

    #[test]
    fn each_consumer_keeps_the_newest_two() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["1.0.0", "1.1.0", "1.10.0"] {
            let (job, _) = setup_in(dir.path(), format!("probe {v}").as_bytes(), v);
            install(&job, SystemTime::now()).unwrap();
        }
        for c in ["b1", "b2"] {
            let mut left: Vec<String> =
                std::fs::read_dir(dir.path().join("artifacts").join(c).join("escape-probe"))
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().into_string().unwrap())
                    .collect();
            left.sort();
            assert_eq!(left, ["1.1.0", "1.10.0"]);
        }
    }
}
