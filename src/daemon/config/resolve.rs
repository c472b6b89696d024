//! The file as written -> the daemon's settings: every value checked, defaults applied, secrets and TLS files
//! read and parsed, paths made relative to the configuration file. Every refusal names the file, the line and
//! the key, so `check-config` finds whatever `run` would trip over.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use rumqttc::QoS;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::raw::{
    RawApi, RawCamera, RawCommandSource, RawConfig, RawFrigate, RawHomeAssistant, RawHttpSource,
    RawModel, RawMqtt, RawRtspSource, RawTls, SecretSource,
};
use super::settings::{
    ApiSettings, CameraSettings, ClientAuth, CommandSettings, Credentials, FrigatePhase,
    FrigateSettings, HomeAssistantSettings, HttpAuth, HttpSettings, ModelSettings, MqttSettings,
    PictureSettings, RtspFrame, RtspSettings, RtspTransport, Secret, Settings, SourceSettings,
    TlsSettings, TrustRoots,
};
use crate::located::TomlFile;

/// The file's settings; `base` anchors its relative paths.
pub(super) fn settings(raw: RawConfig, file: &TomlFile, base: &Path) -> Result<Settings> {
    let context = Context { file, base };
    let model = context.model(raw.model)?;
    let mqtt = context.mqtt(&raw.mqtt)?;
    let home_assistant = context.home_assistant(raw.home_assistant, &mqtt)?;
    let api = raw.api.as_ref().map(|api| context.api(api)).transpose()?;
    let frigate = raw
        .frigate
        .as_ref()
        .map(|frigate| context.frigate(frigate))
        .transpose()?;
    if raw.camera.is_empty() && api.is_none() && frigate.is_none() {
        bail!(file.anywhere(
            "no camera, no [api] and no [frigate]: add at least one [[camera]] table with a name and a source, \
             an [api] table to caption the pictures sent to it, or a [frigate] table to caption Frigate's events"
        ));
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
        api,
        frigate,
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
            threads: at_least_one(model.threads, "model.threads")?,
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
        let credentials = self.credentials(&mqtt.username, &mqtt.password, "", "mqtt")?;
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
            stats_interval: seconds(file, &mqtt.stats_interval_s, "mqtt.stats_interval_s")?,
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
    fn trust_roots(
        &self,
        http: &RawHttpSource,
        label: &str,
        table: &str,
    ) -> Result<Option<TrustRoots>> {
        let https = http.url.get_ref().starts_with("https://");
        match (&http.ca_file, https) {
            (Some(path), false) => bail!(self.file.at(
                path,
                &format!(
                    "{label}: {table}.ca_file is for https URLs, and {table}.url is plain http"
                )
            )),
            (Some(path), true) => {
                let key = format!("{label}: {table}.ca_file");
                let (full, pem) = self.read(path, &key)?;
                let certificates = self.certificates(path, &key, &pem, "a CA certificate")?;
                Ok(Some(TrustRoots {
                    origin: format!("{table}.ca_file {}", full.display()),
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
                            "{label}: {table}.url is https and this system has no CA certificates{why}: \
                             give {table}.ca_file, or install the system's CA certificates (Debian: ca-certificates)"
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

    fn api(&self, a: &RawApi) -> Result<ApiSettings> {
        let file = self.file;
        let Ok(ip) = a.address.get_ref().parse::<IpAddr>() else {
            bail!(file.at(
                &a.address,
                &format!(
                    "api.address `{}` is not an IP address: give 127.0.0.1 (this machine only, the default), \
                     0.0.0.0 (every IPv4 interface), :: or one interface's address",
                    a.address.get_ref()
                )
            ));
        };
        if !(1..=QUEUE_LIMITS).contains(a.queue_limit.get_ref()) {
            bail!(file.at(
                &a.queue_limit,
                &format!("api.queue_limit must be from 1 to {QUEUE_LIMITS}")
            ));
        }
        let megabytes = *a.max_body_mb.get_ref();
        if !(0.001..=1000.0).contains(&megabytes) {
            bail!(file.at(
                &a.max_body_mb,
                &format!("api.max_body_mb must be from 0.001 to 1000 (MB), not {megabytes}")
            ));
        }
        let bearer_token = match &a.bearer_token {
            Some(token) => {
                let secret = self.secret(token, "api.bearer_token")?;
                if secret.expose().trim().is_empty() {
                    bail!(file.at(token, "api.bearer_token is empty"));
                }
                Some(secret)
            }
            None => None,
        };
        Ok(ApiSettings {
            listen: SocketAddr::new(ip, a.port),
            bearer_token,
            queue_limit: *a.queue_limit.get_ref(),
            max_body_bytes: (megabytes * 1e6) as u64,
            timeout: seconds(file, &a.timeout_s, "api.timeout_s")?,
        })
    }

    fn frigate(&self, f: &RawFrigate) -> Result<FrigateSettings> {
        let file = self.file;
        if f.url.get_ref().contains('@') {
            bail!(file.at(
                &f.url,
                "frigate.url holds credentials: give Frigate's internal API port (5000), which needs none"
            ));
        }
        check_url(file, &f.url, "[frigate]", "frigate", &["http"])?;
        topic_level(file, &f.topic_prefix, "frigate.topic_prefix", true)?;
        let phase = match f.phase.get_ref().as_str() {
            "new" => FrigatePhase::New,
            "end" => FrigatePhase::End,
            other => bail!(file.at(
                &f.phase,
                &format!("frigate.phase must be \"new\" or \"end\", not {other:?}")
            )),
        };
        if let Some(height) = &f.snapshot_height
            && !(16..=4320).contains(height.get_ref())
        {
            bail!(file.at(
                height,
                &format!(
                    "frigate.snapshot_height must be from 16 to 4320 (pixels), not {}",
                    height.get_ref()
                )
            ));
        }
        if !(1..=QUEUE_LIMITS).contains(f.queue_limit.get_ref()) {
            bail!(file.at(
                &f.queue_limit,
                &format!("frigate.queue_limit must be from 1 to {QUEUE_LIMITS}")
            ));
        }
        Ok(FrigateSettings {
            url: f.url.get_ref().trim_end_matches('/').to_string(),
            events_topic: format!("{}/events", f.topic_prefix.get_ref()),
            cameras: f.cameras.clone(),
            labels: f.labels.clone(),
            zones: f.zones.clone(),
            phase,
            crop: f.crop,
            snapshot_height: f.snapshot_height.as_ref().map(|h| *h.get_ref()),
            write_description: f.write_description,
            timeout: seconds(file, &f.timeout_s, "frigate.timeout_s")?,
            queue_limit: *f.queue_limit.get_ref(),
        })
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
        let size = &ha.picture_size;
        if !(32..=4096).contains(size.get_ref()) {
            bail!(file.at(
                size,
                &format!(
                    "home_assistant.picture_size must be from 32 to 4096 (pixels), not {}",
                    size.get_ref()
                )
            ));
        }
        let kilobytes = &ha.picture_max_kb;
        if !(4..=8192).contains(kilobytes.get_ref()) {
            bail!(file.at(
                kilobytes,
                &format!(
                    "home_assistant.picture_max_kb must be from 4 to 8192 (kB), not {}",
                    kilobytes.get_ref()
                )
            ));
        }
        let expire_after = match &ha.expire_after_s {
            Some(seconds) if *seconds.get_ref() == 0 => bail!(file.at(
                seconds,
                "home_assistant.expire_after_s must be at least 1 (leave it out to never expire)"
            )),
            Some(seconds) => Some(Duration::from_secs(u64::from(*seconds.get_ref()))),
            None => None,
        };
        Ok(HomeAssistantSettings {
            discovery: ha.discovery,
            discovery_prefix: ha.discovery_prefix.into_inner(),
            node_id: ha
                .node_id
                .map_or_else(|| mqtt.base_topic.clone(), Spanned::into_inner),
            device_name: ha.device_name,
            picture: ha.picture.then(|| PictureSettings {
                size: *size.get_ref(),
                max_bytes: *kilobytes.get_ref() as usize * 1000,
            }),
            expire_after,
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

    /// A username and the password that goes with it, under `table` (`mqtt`, `rtsp`...); `label` (empty, or
    /// `camera `porch`: `) opens the messages.
    fn credentials(
        &self,
        username: &Option<String>,
        password: &Option<Spanned<SecretSource>>,
        label: &str,
        table: &str,
    ) -> Result<Option<Credentials>> {
        Ok(match (username, password) {
            (None, Some(password)) => bail!(self.file.at(
                password,
                &format!("{label}{table}.password is set but {table}.username is not")
            )),
            (None, None) => None,
            (Some(username), password) => Some(Credentials {
                username: username.clone(),
                password: match password {
                    Some(p) => self.secret(p, &format!("{label}{table}.password"))?,
                    None => Secret::new(String::new()),
                },
            }),
        })
    }

    fn source(&self, camera: &Spanned<RawCamera>, label: &str) -> Result<SourceSettings> {
        let file = self.file;
        let c = camera.get_ref();
        let given: Vec<&str> = [
            ("[camera.file]", c.file.is_some()),
            ("[camera.http]", c.http.is_some()),
            ("[camera.mjpeg]", c.mjpeg.is_some()),
            ("[camera.rtsp]", c.rtsp.is_some()),
            ("[camera.command]", c.command.is_some()),
            ("[camera.device]", c.device.is_some()),
        ]
        .into_iter()
        .filter_map(|(table, present)| present.then_some(table))
        .collect();
        if given.len() > 1 {
            bail!(file.at(
                camera,
                &format!(
                    "{label} has several sources ({}): keep one",
                    given.join(", ")
                )
            ));
        }
        if let Some(source) = &c.file {
            return Ok(SourceSettings::File(self.base.join(&source.path)));
        }
        if let Some(http) = &c.http {
            return Ok(SourceSettings::Http(self.http(http, label, "http")?));
        }
        if let Some(mjpeg) = &c.mjpeg {
            return Ok(SourceSettings::Mjpeg(self.http(mjpeg, label, "mjpeg")?));
        }
        if let Some(rtsp) = &c.rtsp {
            let rtsp = self.rtsp(rtsp, label)?;
            #[cfg(feature = "rtsp")]
            return Ok(SourceSettings::Rtsp(rtsp));
            #[cfg(not(feature = "rtsp"))]
            {
                // Checked all the same, so that the file's other mistakes are found first.
                let _ = rtsp;
                bail!(file.at(
                    camera,
                    &format!("{label}: [camera.rtsp]: this capdec was built without RTSP (cargo's `rtsp` feature)")
                ));
            }
        }
        if let Some(command) = &c.command {
            return Ok(SourceSettings::Command(self.command(command, label)?));
        }
        match &c.device {
            Some(device) => {
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
            None => bail!(file.at(
                camera,
                &format!(
                    "{label} has no source: add one of [camera.file], [camera.http], [camera.mjpeg], \
                     [camera.rtsp], [camera.command], [camera.device]"
                )
            )),
        }
    }

    /// A `[camera.http]` or `[camera.mjpeg]` table; `table` is its name.
    fn http(&self, http: &RawHttpSource, label: &str, table: &str) -> Result<HttpSettings> {
        let file = self.file;
        check_url(file, &http.url, label, table, &["http", "https"])?;
        let timeout = seconds(
            file,
            &http.timeout_s,
            &format!("{label}: {table}.timeout_s"),
        )?;
        let auth = match (&http.username, &http.password, &http.bearer_token) {
            (_, _, None) => self
                .credentials(&http.username, &http.password, &format!("{label}: "), table)?
                .map(|c| HttpAuth::Basic {
                    username: c.username,
                    password: c.password,
                }),
            (Some(_), _, Some(token)) => bail!(file.at(
                token,
                &format!("{label}: {table}.bearer_token and {table}.username exclude each other")
            )),
            (None, Some(password), Some(_)) => bail!(file.at(
                password,
                &format!("{label}: {table}.password is set but {table}.username is not")
            )),
            (None, None, Some(token)) => Some(HttpAuth::Bearer(
                self.secret(token, &format!("{label}: {table}.bearer_token"))?,
            )),
        };
        Ok(HttpSettings {
            url: http.url.get_ref().clone(),
            timeout,
            auth,
            roots: self.trust_roots(http, label, table)?,
            max_picture_bytes: picture_limit(file, &http.max_picture_mb, label, table)?,
        })
    }

    fn rtsp(&self, rtsp: &RawRtspSource, label: &str) -> Result<RtspSettings> {
        let file = self.file;
        check_url(file, &rtsp.url, label, "rtsp", &["rtsp"])?;
        let transport = match rtsp.transport.get_ref().as_str() {
            "tcp" => RtspTransport::Tcp,
            "udp" => RtspTransport::Udp,
            other => bail!(file.at(
                &rtsp.transport,
                &format!("{label}: rtsp.transport must be \"tcp\" or \"udp\", not {other:?}")
            )),
        };
        let frame = match rtsp.frame.get_ref().as_str() {
            "latest" => RtspFrame::Latest,
            "keyframe" => RtspFrame::Keyframe,
            other => bail!(file.at(
                &rtsp.frame,
                &format!("{label}: rtsp.frame must be \"latest\" or \"keyframe\", not {other:?}")
            )),
        };
        Ok(RtspSettings {
            url: rtsp.url.get_ref().clone(),
            credentials: self.credentials(
                &rtsp.username,
                &rtsp.password,
                &format!("{label}: "),
                "rtsp",
            )?,
            transport,
            timeout: seconds(file, &rtsp.timeout_s, &format!("{label}: rtsp.timeout_s"))?,
            frame,
            max_picture_bytes: picture_limit(file, &rtsp.max_picture_mb, label, "rtsp")?,
        })
    }

    /// A `[camera.command]`: its program must exist now, so that `check-config` finds a missing one.
    fn command(&self, command: &RawCommandSource, label: &str) -> Result<CommandSettings> {
        let file = self.file;
        let argv = command.argv.get_ref();
        let Some(program) = argv.first().filter(|p| !p.trim().is_empty()) else {
            bail!(file.at(
                &command.argv,
                &format!("{label}: command.argv is empty: give the program and its arguments, \
                          e.g. [\"rpicam-still\", \"-n\", \"-t\", \"1\", \"-e\", \"jpg\", \"-o\", \"-\"]")
            ));
        };
        let found = if program.contains('/') {
            let path = self.base.join(program);
            if !is_executable(&path) {
                bail!(file.at(
                    &command.argv,
                    &format!(
                        "{label}: command.argv: {} is not an executable file",
                        path.display()
                    )
                ));
            }
            path
        } else {
            let Some(path) = on_path(program) else {
                bail!(file.at(
                    &command.argv,
                    &format!(
                        "{label}: command.argv: program `{program}` is not on PATH{}",
                        install_hint(program)
                    )
                ));
            };
            path
        };
        let mut argv = argv.clone();
        argv[0] = found.display().to_string();
        Ok(CommandSettings {
            argv,
            timeout: seconds(
                file,
                &command.timeout_s,
                &format!("{label}: command.timeout_s"),
            )?,
            max_picture_bytes: picture_limit(file, &command.max_picture_mb, label, "command")?,
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

/// The most requests or events a queue may hold: far beyond what a captioner gets through while a client waits.
const QUEUE_LIMITS: usize = 1024;

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

/// A URL as a message may show it: what precedes an `@` in its authority is a secret.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// `max_picture_mb` in bytes: from a kilobyte to a gigabyte.
fn picture_limit(file: &TomlFile, value: &Spanned<f64>, label: &str, table: &str) -> Result<u64> {
    let megabytes = *value.get_ref();
    if !(0.001..=1000.0).contains(&megabytes) {
        bail!(file.at(
            value,
            &format!(
                "{label}: {table}.max_picture_mb must be from 0.001 to 1000 (MB), not {megabytes}"
            )
        ));
    }
    Ok((megabytes * 1e6) as u64)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Where `PATH` finds `program`.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// Where the programs people name here come from.
pub(super) fn install_hint(program: &str) -> &'static str {
    match program {
        "rpicam-still" | "rpicam-jpeg" | "rpicam-vid" => {
            " (Raspberry Pi OS: `sudo apt install rpicam-apps`)"
        }
        "libcamera-still" | "libcamera-jpeg" => {
            " (older Raspberry Pi OS: `sudo apt install libcamera-apps`; on bookworm it is rpicam-still)"
        }
        "ffmpeg" => " (Debian, Raspberry Pi OS: `sudo apt install ffmpeg`)",
        "gphoto2" => " (Debian, Raspberry Pi OS: `sudo apt install gphoto2`)",
        _ => "",
    }
}

/// A URL with one of `schemes`, a host and no credentials (they would show in logs).
fn check_url(
    file: &TomlFile,
    url: &Spanned<String>,
    label: &str,
    table: &str,
    schemes: &[&str],
) -> Result<()> {
    let text = url.get_ref();
    let problem = match text.parse::<ureq::http::Uri>() {
        Err(e) => Some(format!("is not a URL ({e})")),
        Ok(uri) => match (uri.scheme_str(), uri.host()) {
            _ if uri.authority().is_some_and(|a| a.as_str().contains('@')) => Some(format!(
                "holds credentials, which would show in logs: use {table}.username and {table}.password"
            )),
            (Some(scheme), host) if schemes.contains(&scheme) => host
                .is_none_or(str::is_empty)
                .then(|| "has no host".to_string()),
            _ => {
                let starts: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
                Some(format!("must start with {}", starts.join(" or ")))
            }
        },
    };
    match problem {
        Some(problem) => bail!(file.at(
            url,
            &format!(
                "{label}: {table}.url `{}` {problem}",
                without_credentials(text)
            )
        )),
        None => Ok(()),
    }
}
