//! The CLI's HTTPS client for a fleet's API: it trusts the fleet's own CA
//! and sends a bearer token.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    pub fn new(base: &str, ca: &Path, token: &str) -> anyhow::Result<ApiClient> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read the fleet's CA {}", ca.display()))?
        {
            roots.add(c?)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(ApiClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
        })
    }

    /// The fleet's API URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `req` with the token; the answer's body when it succeeded,
    /// else the fleet's error.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<bytes::Bytes> {
        let r = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the fleet at {}", self.base))?;
        let status = r.status();
        let body = r.bytes().await?;
        if !status.is_success() {
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("the fleet answered {status}: {why}");
        }
        Ok(body)
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let body = self.send(req).await?;
        serde_json::from_slice(&body).context("the fleet's answer does not parse")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A text answer (`/metrics`).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let body = self.send(self.http.get(self.url(path))).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.json(self.http.get(self.url(path))).await
    }

    /// Sends file `file` as the body (streamed, not read into memory).
    pub async fn post_file<T: DeserializeOwned>(
        &self,
        path: &str,
        file: &std::path::Path,
    ) -> anyhow::Result<T> {
        let f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot read {}", file.display()))?;
        let len = f.metadata().await?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f));
        let req = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .timeout(std::time::Duration::from_secs(3600))
            .body(body);
        self.json(req).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.json(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.json(self.http.post(self.url(path)).json(body)).await
    }
}
