//! The file as written -> the daemon's settings: every value checked, defaults applied, secrets and TLS files
//! read and parsed, paths made relative to the configuration file. Every refusal names the file, the line and
//! the key, so `check-config` finds whatever `run` would trip over.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use rumqttc::QoS;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::raw::{
    RawCamera, RawConfig, RawHomeAssistant, RawHttpSource, RawModel, RawMqtt, RawTls, SecretSource,
};
use super::settings::{
    CameraSettings, ClientAuth, Credentials, HomeAssistantSettings, HttpAuth, HttpSettings,
    ModelSettings, MqttSettings, Secret, Settings, SourceSettings, TlsSettings, TrustRoots,
};
use crate::located::TomlFile;

/// The file's settings; `base` anchors its relative paths.
pub(super) fn settings(raw: RawConfig, file: &TomlFile, base: &Path) -> Result<Settings> {
    let context = Context { file, base };
    let model = context.model(raw.model)?;
    let mqtt = context.mqtt(&raw.mqtt)?;
    let home_assistant = context.home_assistant(raw.home_assistant, &mqtt)?;
    if raw.camera.is_empty() {
        bail!(
            file.anywhere("no camera: add at least one [[camera]] table with a name and a source")
        );
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut cameras = Vec::with_capacity(raw.camera.len());
    for camera in raw.camera {
        let name = &camera.get_ref().name;
        topic_level(file, name, "camera.name", false)?;
        let line = file.line(name.span());
        if let Some(first) = names.insert(name.get_ref().clone(), line) {
            bail!(file.at(
                name,
                &format!(
                    "camera name `{}` is already used on line {first}",
                    name.get_ref()
                )
            ));
        }
        cameras.push(context.camera(camera, &raw.mqtt)?);
    }
    Ok(Settings {
        log_level: raw.log_level,
        model,
        mqtt,
        home_assistant,
        cameras,
    })
}

struct Context<'a> {
    file: &'a TomlFile<'a>,
    base: &'a Path,
}

impl Context<'_> {
    fn model(&self, model: RawModel) -> Result<ModelSettings> {
        let file = self.file;
        if let Some(precision) = &model.precision {
            non_empty(file, precision, "model.precision")?;
        }
        let at_least_one = |value: Option<Spanned<usize>>, key: &str| match value {
            Some(v) if *v.get_ref() == 0 => Err(file.at(&v, &format!("{key} must be at least 1"))),
            v => Ok(v.map(Spanned::into_inner)),
        };
        Ok(ModelSettings {
            bundle: model.bundle.map(|dir| self.base.join(dir)),
            precision: model.precision.map(Spanned::into_inner),
            beam_size: at_least_one(model.beam_size, "model.beam_size")?,
            max_tokens: at_least_one(model.max_tokens, "model.max_tokens")?,
        })
    }

    fn mqtt(&self, mqtt: &RawMqtt) -> Result<MqttSettings> {
        let file = self.file;
        non_empty(file, &mqtt.host, "mqtt.host")?;
        non_empty(file, &mqtt.client_id, "mqtt.client_id")?;
        topic_level(file, &mqtt.base_topic, "mqtt.base_topic", true)?;
        qos(file, &mqtt.qos, "mqtt.qos")?;
        if *mqtt.keep_alive_s.get_ref() < 5 {
            bail!(file.at(
                &mqtt.keep_alive_s,
                "mqtt.keep_alive_s must be at least 5 seconds"
            ));
        }
        if *mqtt.queue_limit.get_ref() == 0 {
            bail!(file.at(&mqtt.queue_limit, "mqtt.queue_limit must be at least 1"));
        }
        let reconnect_min = seconds(file, &mqtt.reconnect_min_s, "mqtt.reconnect_min_s")?;
        let reconnect_max = seconds(file, &mqtt.reconnect_max_s, "mqtt.reconnect_max_s")?;
        if reconnect_max < reconnect_min {
            bail!(file.at(
                &mqtt.reconnect_max_s,
                "mqtt.reconnect_max_s is less than mqtt.reconnect_min_s"
            ));
        }
        let credentials = match (&mqtt.username, &mqtt.password) {
            (None, Some(password)) => {
                bail!(file.at(password, "mqtt.password is set but mqtt.username is not"))
            }
            (None, None) => None,
            (Some(username), password) => Some(Credentials {
                username: username.clone(),
                password: match password {
                    Some(p) => self.secret(p, "mqtt.password")?,
                    None => Secret::new(String::new()),
                },
            }),
        };
        let tls = mqtt.tls.as_ref().map(|tls| self.tls(tls)).transpose()?;
        Ok(MqttSettings {
            host: mqtt.host.get_ref().clone(),
            port: mqtt.port.unwrap_or(if tls.is_some() { 8883 } else { 1883 }),
            client_id: mqtt.client_id.get_ref().clone(),
            base_topic: mqtt.base_topic.get_ref().clone(),
            keep_alive: Duration::from_secs(*mqtt.keep_alive_s.get_ref()),
            queue_limit: *mqtt.queue_limit.get_ref(),
            reconnect_min,
            reconnect_max,
            credentials,
            tls,
        })
    }

    /// Reads the TLS files and checks each is PEM holding what it should, so that a wrong file is refused by
    /// `check-config` and at start, not at the first connection.
    fn tls(&self, tls: &Spanned<RawTls>) -> Result<TlsSettings> {
        let file = self.file;
        let t = tls.get_ref();
        let (ca_file, ca) = self.read(&t.ca_file, "mqtt.tls.ca_file")?;
        self.certificates(&t.ca_file, "mqtt.tls.ca_file", &ca, "a CA certificate")?;
        let client_auth = match (&t.client_cert, &t.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let (cert_file, chain) = self.read(cert, "mqtt.tls.client_cert")?;
                self.certificates(cert, "mqtt.tls.client_cert", &chain, "a certificate")?;
                let (_, key_bytes) = self.read(key, "mqtt.tls.client_key")?;
                check_pem(file, key, "mqtt.tls.client_key", "a private key", || {
                    PrivateKeyDer::from_pem_slice(&key_bytes)
                        .map(|_| 1)
                        .map_err(|e| e.to_string())
                })?;
                let Ok(key_text) = String::from_utf8(key_bytes) else {
                    bail!(file.at(key, "mqtt.tls.client_key: not a PEM text file"));
                };
                Some(ClientAuth {
                    cert_file,
                    chain,
                    key: Secret::new(key_text),
                })
            }
            _ => bail!(file.at(
                tls,
                "mqtt.tls: client_cert and client_key go together: give both or neither"
            )),
        };
        Ok(TlsSettings {
            ca_file,
            ca,
            client_auth,
        })
    }

    /// The certificates of a PEM file, at least one.
    fn certificates(
        &self,
        path: &Spanned<PathBuf>,
        key: &str,
        pem: &[u8],
        holds: &str,
    ) -> Result<Vec<CertificateDer<'static>>> {
        let mut certificates = Vec::new();
        check_pem(self.file, path, key, holds, || {
            for certificate in CertificateDer::pem_slice_iter(pem) {
                certificates.push(certificate.map_err(|e| e.to_string())?);
            }
            Ok(certificates.len())
        })?;
        Ok(certificates)
    }

    /// An https camera's roots: its own CA file, else the system's (read now, so that a system without any is
    /// reported by `check-config`).
    fn trust_roots(&self, http: &RawHttpSource, label: &str) -> Result<Option<TrustRoots>> {
        let https = http.url.get_ref().starts_with("https://");
        match (&http.ca_file, https) {
            (Some(path), false) => bail!(self.file.at(
                path,
                &format!("{label}: http.ca_file is for https URLs, and http.url is plain http")
            )),
            (Some(path), true) => {
                let key = format!("{label}: http.ca_file");
                let (full, pem) = self.read(path, &key)?;
                let certificates = self.certificates(path, &key, &pem, "a CA certificate")?;
                Ok(Some(TrustRoots {
                    origin: format!("http.ca_file {}", full.display()),
                    certificates,
                }))
            }
            (None, true) => {
                let system = rustls_native_certs::load_native_certs();
                if system.certs.is_empty() {
                    let why = system
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default();
                    bail!(self.file.at(
                        &http.url,
                        &format!(
                            "{label}: http.url is https and this system has no CA certificates{why}: \
                             give http.ca_file, or install the system's CA certificates (Debian: ca-certificates)"
                        )
                    ));
                }
                Ok(Some(TrustRoots {
                    origin: "the system's CA certificates".into(),
                    certificates: system.certs,
                }))
            }
            (None, false) => Ok(None),
        }
    }

    /// A file the configuration names, with its path as the daemon sees it.
    fn read(&self, path: &Spanned<PathBuf>, key: &str) -> Result<(PathBuf, Vec<u8>)> {
        let full = self.base.join(path.get_ref());
        match fs::read(&full) {
            Ok(bytes) => Ok((full, bytes)),
            Err(e) => bail!(
                self.file
                    .at(path, &format!("{key}: cannot read {}: {e}", full.display()))
            ),
        }
    }

    fn home_assistant(
        &self,
        ha: RawHomeAssistant,
        mqtt: &MqttSettings,
    ) -> Result<HomeAssistantSettings> {
        let file = self.file;
        topic_level(
            file,
            &ha.discovery_prefix,
            "home_assistant.discovery_prefix",
            true,
        )?;
        if let Some(node_id) = &ha.node_id {
            topic_level(file, node_id, "home_assistant.node_id", false)?;
        }
        Ok(HomeAssistantSettings {
            discovery: ha.discovery,
            discovery_prefix: ha.discovery_prefix.into_inner(),
            node_id: ha
                .node_id
                .map_or_else(|| mqtt.base_topic.clone(), Spanned::into_inner),
            device_name: ha.device_name,
        })
    }

    fn camera(&self, camera: Spanned<RawCamera>, mqtt: &RawMqtt) -> Result<CameraSettings> {
        let file = self.file;
        let c = camera.get_ref();
        let label = format!("camera `{}`", c.name.get_ref());
        let interval = seconds(file, &c.interval_s, &format!("{label}: interval_s"))?;
        let threshold = &c.skip_if_similarity_above;
        if !(0.0..=1.0).contains(threshold.get_ref()) {
            bail!(file.at(
                threshold,
                &format!("{label}: skip_if_similarity_above must be between 0 and 1")
            ));
        }
        if *c.max_captions_per_minute.get_ref() == 0 {
            bail!(file.at(
                &c.max_captions_per_minute,
                &format!("{label}: max_captions_per_minute must be at least 1")
            ));
        }
        if let Some(level) = &c.qos {
            qos(file, level, &format!("{label}: qos"))?;
        }
        let source = self.source(&camera, &label)?;
        Ok(CameraSettings {
            name: c.name.get_ref().clone(),
            interval,
            skip_if_similarity_above: *threshold.get_ref(),
            max_captions_per_minute: *c.max_captions_per_minute.get_ref(),
            qos: qos_level(*c.qos.as_ref().unwrap_or(&mqtt.qos).get_ref()),
            retain: c.retain.unwrap_or(mqtt.retain),
            source,
        })
    }

    fn source(&self, camera: &Spanned<RawCamera>, label: &str) -> Result<SourceSettings> {
        let file = self.file;
        let c = camera.get_ref();
        match (&c.file, &c.http, &c.device) {
            (Some(source), None, None) => Ok(SourceSettings::File(self.base.join(&source.path))),
            (None, Some(http), None) => Ok(SourceSettings::Http(self.http(http, label)?)),
            (None, None, Some(device)) => {
                if device.index.is_some() == device.name.is_some() {
                    bail!(file.at(
                        camera,
                        &format!("{label}: [camera.device] needs exactly one of `index` and `name`")
                    ));
                }
                if device.width.is_some() != device.height.is_some() {
                    bail!(file.at(
                        camera,
                        &format!("{label}: [camera.device] width and height go together")
                    ));
                }
                #[cfg(target_os = "linux")]
                {
                    use super::settings::{DeviceSelect, DeviceSettings};
                    let select = match (device.index, &device.name) {
                        (Some(index), _) => DeviceSelect::Index(index),
                        (None, name) => DeviceSelect::Name(name.clone().unwrap_or_default()),
                    };
                    Ok(SourceSettings::Device(DeviceSettings {
                        select,
                        size: device.width.zip(device.height),
                        fps: device.fps,
                    }))
                }
                #[cfg(not(target_os = "linux"))]
                bail!(file.at(
                    camera,
                    &format!("{label}: [camera.device] cameras are read through V4L2, which only Linux has")
                ))
            }
            (None, None, None) => bail!(file.at(
                camera,
                &format!("{label} has no source: add one of [camera.file], [camera.http], [camera.device]")
            )),
            _ => bail!(file.at(
                camera,
                &format!("{label} has several sources: keep one of [camera.file], [camera.http], [camera.device]")
            )),
        }
    }

    fn http(&self, http: &RawHttpSource, label: &str) -> Result<HttpSettings> {
        let file = self.file;
        check_url(file, &http.url, label)?;
        let timeout = seconds(file, &http.timeout_s, &format!("{label}: http.timeout_s"))?;
        let auth = match (&http.username, &http.password, &http.bearer_token) {
            (None, Some(password), _) => bail!(file.at(
                password,
                &format!("{label}: http.password is set but http.username is not")
            )),
            (Some(_), _, Some(token)) => bail!(file.at(
                token,
                &format!("{label}: http.bearer_token and http.username exclude each other")
            )),
            (Some(username), password, None) => Some(HttpAuth::Basic {
                username: username.clone(),
                password: match password {
                    Some(p) => self.secret(p, &format!("{label}: http.password"))?,
                    None => Secret::new(String::new()),
                },
            }),
            (None, None, Some(token)) => Some(HttpAuth::Bearer(
                self.secret(token, &format!("{label}: http.bearer_token"))?,
            )),
            (None, None, None) => None,
        };
        Ok(HttpSettings {
            url: http.url.get_ref().clone(),
            timeout,
            auth,
            roots: self.trust_roots(http, label)?,
        })
    }

    fn secret(&self, secret: &Spanned<SecretSource>, key: &str) -> Result<Secret> {
        let value = match secret.get_ref() {
            SecretSource::Value(value) => value.clone(),
            SecretSource::File(path) => {
                let path = self.base.join(path);
                let text = fs::read_to_string(&path).map_err(|e| {
                    self.file.at(
                        secret,
                        &format!("{key}: cannot read {}: {e}", path.display()),
                    )
                })?;
                // Files written with `echo` end in a newline that is no part of the password.
                text.trim_end_matches(['\r', '\n']).to_string()
            }
            SecretSource::Env(variable) => std::env::var(variable).map_err(|_| {
                self.file.at(
                    secret,
                    &format!("{key}: environment variable `{variable}` is not set"),
                )
            })?,
        };
        Ok(Secret::new(value))
    }
}

/// The number of certificates in a PEM file, or why it holds none.
fn check_pem(
    file: &TomlFile,
    path: &Spanned<PathBuf>,
    key: &str,
    holds: &str,
    parse: impl FnOnce() -> Result<usize, String>,
) -> Result<()> {
    let problem = match parse() {
        Ok(0) => "no such section in it".to_string(),
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    bail!(file.at(
        path,
        &format!(
            "{key}: {} is not PEM holding {holds}: {problem}",
            path.get_ref().display()
        )
    ))
}

fn non_empty(file: &TomlFile, value: &Spanned<String>, key: &str) -> Result<()> {
    if value.get_ref().trim().is_empty() {
        bail!(file.at(value, &format!("{key} is empty")));
    }
    Ok(())
}

/// Names used in MQTT topics and Home Assistant ids: no wildcards, no separators a topic would split on.
fn topic_level(
    file: &TomlFile,
    value: &Spanned<String>,
    key: &str,
    slashes_allowed: bool,
) -> Result<()> {
    let text = value.get_ref();
    let fine = |c: char| {
        c.is_ascii_alphanumeric() || c == '_' || c == '-' || (slashes_allowed && c == '/')
    };
    if text.is_empty() || !text.chars().all(fine) || text.starts_with('/') || text.ends_with('/') {
        let allowed = if slashes_allowed {
            "letters, digits, `_`, `-` and inner `/`"
        } else {
            "letters, digits, `_` and `-`"
        };
        bail!(file.at(
            value,
            &format!("{key} `{text}` must be non-empty and use only {allowed}")
        ));
    }
    Ok(())
}

fn qos(file: &TomlFile, value: &Spanned<u8>, key: &str) -> Result<()> {
    if *value.get_ref() > 2 {
        bail!(file.at(
            value,
            &format!("{key} must be 0, 1 or 2, not {}", value.get_ref())
        ));
    }
    Ok(())
}

/// A level `qos` has accepted.
fn qos_level(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// From a millisecond (less would spin a thread) to about 31 years (more would overflow the clock's sums).
const SECONDS: std::ops::RangeInclusive<f64> = 0.001..=1e9;

fn seconds(file: &TomlFile, value: &Spanned<f64>, key: &str) -> Result<Duration> {
    let seconds = *value.get_ref();
    if !SECONDS.contains(&seconds) {
        bail!(file.at(
            value,
            &format!(
                "{key} must be a number of seconds from {} to {}, not {seconds}",
                SECONDS.start(),
                SECONDS.end()
            )
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn check_url(file: &TomlFile, url: &Spanned<String>, label: &str) -> Result<()> {
    let text = url.get_ref();
    let problem = match text.parse::<ureq::http::Uri>() {
        Err(e) => Some(format!("is not a URL ({e})")),
        Ok(uri) => match (uri.scheme_str(), uri.host()) {
            _ if uri.authority().is_some_and(|a| a.as_str().contains('@')) => Some(
                "holds credentials, which would show in logs: use http.username and http.password"
                    .to_string(),
            ),
            (Some("http" | "https"), Some(host)) if !host.is_empty() => None,
            (Some("http" | "https"), _) => Some("has no host".to_string()),
            _ => Some("must start with http:// or https://".to_string()),
        },
    };
    match problem {
        Some(problem) => bail!(file.at(url, &format!("{label}: http.url `{text}` {problem}"))),
        None => Ok(()),
    }
}
