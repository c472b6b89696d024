//! HTTP cameras: JPEG snapshot URLs, and what the MJPEG source shares with them (the client, its TLS roots and
//! credentials, the messages for what went wrong).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use base64::Engine;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use super::{Frame, FrameSource};
use crate::caption::preprocess;
use crate::daemon::config::{HttpAuth, HttpSettings};
use crate::daemon::tls;

/// A camera's URL with the agent, credentials and trust roots it is fetched with.
pub(super) struct HttpClient {
    pub url: String,
    pub timeout: Duration,
    pub max_picture_bytes: u64,
    fetched: Fetched,
    authorization: Option<String>,
    /// What the certificate of an https camera is checked against, for messages.
    roots: Option<String>,
    agent: ureq::Agent,
}

/// What is fetched: a snapshot, whose request may take `timeout` in all, or a stream, which never ends: its
/// answer's head and then each read may take `timeout`.
#[derive(Clone, Copy)]
pub(super) enum Fetched {
    Snapshot,
    Stream,
}

impl Fetched {
    /// The configuration's table, for messages.
    fn table(self) -> &'static str {
        match self {
            Fetched::Snapshot => "http",
            Fetched::Stream => "mjpeg",
        }
    }
}

impl HttpClient {
    pub fn new(config: &HttpSettings, fetched: Fetched) -> HttpClient {
        let timeout = config.timeout;
        let agent = ureq::Agent::config_builder().http_status_as_error(false);
        let mut agent = match fetched {
            Fetched::Snapshot => agent.timeout_global(Some(timeout)),
            Fetched::Stream => agent
                .timeout_connect(Some(timeout))
                .timeout_recv_response(Some(timeout))
                .timeout_per_read(Some(timeout)),
        };
        if let Some(roots) = &config.roots {
            let certificates: Vec<Certificate<'static>> = roots
                .certificates
                .iter()
                .map(|der| Certificate::from_der(der).to_owned())
                .collect();
            agent = agent.tls_config(
                TlsConfig::builder()
                    .provider(TlsProvider::Rustls)
                    .root_certs(RootCerts::from(certificates))
                    // rumqttc's, already in the binary; ureq's default would add ring.
                    .unversioned_rustls_crypto_provider(Arc::new(
                        rustls::crypto::aws_lc_rs::default_provider(),
                    ))
                    .build(),
            );
        }
        let agent = agent.build().into();
        let authorization = config.auth.as_ref().map(|auth| match auth {
            HttpAuth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                format!("Basic {encoded}")
            }
            HttpAuth::Bearer(token) => format!("Bearer {}", token.expose()),
        });
        HttpClient {
            url: config.url.clone(),
            timeout,
            max_picture_bytes: config.max_picture_bytes,
            fetched,
            authorization,
            roots: config.roots.as_ref().map(|roots| roots.origin.clone()),
            agent,
        }
    }

    /// The answer to a GET of the URL, once its status says it holds what `holds` names.
    pub fn get(&self, holds: &str) -> Result<ureq::http::Response<ureq::Body>> {
        let url = &self.url;
        let mut request = self.agent.get(url);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request.call().map_err(|e| self.describe(e))?;
        let status = response.status();
        if status == 401 || status == 403 {
            bail!(
                "{url}: HTTP {status}: the camera refused the credentials (check {}.username/password/bearer_token)",
                self.fetched.table()
            );
        }
        if !status.is_success() {
            bail!("{url}: HTTP {status}, expected 200 with {holds}");
        }
        Ok(response)
    }

    pub fn describe(&self, error: ureq::Error) -> anyhow::Error {
        let url = &self.url;
        let tls_cause = match &error {
            ureq::Error::Rustls(cause) => Some(cause),
            ureq::Error::Io(io) => tls::rustls_cause(io),
            _ => None,
        };
        if let Some(roots) = &self.roots
            && let Some(cause) = tls_cause
        {
            let host = url
                .parse::<ureq::http::Uri>()
                .ok()
                .and_then(|uri| uri.host().map(str::to_string))
                .unwrap_or_default();
            let peer = tls::Peer {
                what: "the camera",
                host: &host,
                host_key: match self.fetched {
                    Fetched::Snapshot => "http.url",
                    Fetched::Stream => "mjpeg.url",
                },
                roots,
                client_cert: None,
                client_hint: "camera sources do not send one",
            };
            return anyhow::anyhow!("{url}: {}", tls::explain(cause, &peer));
        }
        match error {
            ureq::Error::Timeout(_) => anyhow::anyhow!(
                "{url}: no complete answer within {} s",
                self.timeout.as_secs_f64()
            ),
            ureq::Error::BodyExceedsLimit(limit) => {
                anyhow::anyhow!(
                    "{url}: the snapshot is larger than {} (max_picture_mb)",
                    megabytes(limit)
                )
            }
            ureq::Error::HostNotFound => anyhow::anyhow!("{url}: host not found"),
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => anyhow::anyhow!(
                "{url}: nothing received for {} s",
                self.timeout.as_secs_f64()
            ),
            ureq::Error::Io(e) => anyhow::anyhow!("{url}: {e}"),
            other => anyhow::anyhow!("{url}: {other}"),
        }
    }
}

/// A byte count for messages, in the unit `max_picture_mb` is given in.
pub(super) fn megabytes(bytes: u64) -> String {
    format!("{} MB", bytes as f64 / 1e6)
}

/// A JPEG snapshot URL: an ESP32-CAM, an IP camera, Frigate's `latest.jpg`; over HTTPS, verified against the
/// camera's CA file or the system's roots.
pub struct HttpSource {
    client: HttpClient,
}

impl HttpSource {
    pub fn new(config: &HttpSettings) -> HttpSource {
        HttpSource {
            client: HttpClient::new(config, Fetched::Snapshot),
        }
    }

    fn fetch(&self) -> Result<Vec<u8>> {
        let mut response = self.client.get("a JPEG snapshot")?;
        response
            .body_mut()
            .with_config()
            .limit(self.client.max_picture_bytes)
            .read_to_vec()
            .map_err(|e| self.client.describe(e))
    }
}

impl FrameSource for HttpSource {
    fn grab(&mut self) -> Result<Option<Frame>> {
        let taken_at = SystemTime::now();
        let bytes = self.fetch()?;
        let url = &self.client.url;
        let image = preprocess::decode_rgb(&bytes, url, None)?;
        Ok(Some(Frame {
            image,
            origin: url.clone(),
            taken_at,
        }))
    }
}
