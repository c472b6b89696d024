//! The HTTP API: the daemon as the local describer that Frigate's GenAI, Home Assistant's LLM Vision and other
//! callers of Ollama or OpenAI send pictures to. Ollama's `/api/generate`, `/api/chat`, `/api/tags`,
//! `/api/show`, `/api/pull`, `/api/version` (`ollama`) and OpenAI's `/v1/chat/completions`, `/v1/models`
//! (`openai`); the answer is the caption, and the prompt is read but not used (CapDec is not promptable).
//!
//! hyper serves HTTP/1 on a tokio runtime of the API's own thread. A request's pictures are decoded there (on
//! tokio's blocking threads) and handed to the one captioner through the board (`board`), where they take their
//! turn with the cameras. At most `queue_limit` requests are taken at once, from their first body byte until the
//! captioner is done with them, so memory stays bounded (`queue_limit` bodies of `max_body_mb`, one picture
//! decoded at a time, the rest kept as the encoder's small input); one more is answered 503 with `Retry-After`
//! at once. A body over the limit is 413, a picture that does not decode 400 with the reason, a
//! body that does not arrive within `timeout_s` 408 and a caption that does not 504.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

mod ollama;
mod openai;
mod pictures;

use super::board::{Board, Request};
use super::stats::Stats;
use crate::bundle;
use crate::caption::captioner::{Caption, Model};
use crate::caption::preprocess::Preprocessor;
use crate::daemon::config::{ApiSettings, Secret};

/// The one model every name answers for: CapDec has no others to choose from.
const MODEL_NAME: &str = "capdec";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// Pictures captioned of one request: a GenAI caller sends a handful of frames of one moment; of more, an
/// evenly spaced few are captioned.
const MAX_PICTURES: usize = 16;
/// The bodies of `/api/show` and `/api/pull`: a model's name.
const SMALL_BODY: u64 = 64 * 1024;

pub(super) type Response = hyper::Response<Full<Bytes>>;

/// The running API; `stop` ends it.
pub(super) struct ApiServer {
    pub address: SocketAddr,
    shutdown: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl ApiServer {
    /// Listens now, so that an address in use stops the daemon at start with the reason, then serves on a
    /// thread of its own.
    pub fn start(
        settings: &ApiSettings,
        board: Arc<Board>,
        model: &Model,
        stats: Arc<Stats>,
    ) -> Result<ApiServer> {
        let listener = TcpListener::bind(settings.listen).with_context(|| {
            format!(
                "[api]: cannot listen on {} (is another program, such as Ollama, using the port?)",
                settings.listen
            )
        })?;
        let address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let state = Arc::new(State {
            board,
            taken: Arc::new(Semaphore::new(settings.queue_limit)),
            queue_limit: settings.queue_limit,
            token: settings.bearer_token.clone(),
            max_body_bytes: settings.max_body_bytes,
            timeout: settings.timeout,
            about: About::of(model),
            completions: AtomicU64::new(0),
            stats,
            preprocessor: model.captioner.preprocessor().clone(),
            decoding: Arc::new(Semaphore::new(1)),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("[api]: cannot start its runtime")?;
        let (shutdown, stop) = oneshot::channel();
        let thread = thread::Builder::new()
            .name("api".into())
            .spawn(move || runtime.block_on(serve(listener, state, stop)))
            .context("cannot start the API's thread")?;
        Ok(ApiServer {
            address,
            shutdown,
            thread,
        })
    }

    /// Stops accepting connections and ends those open; a request waiting for its caption is not answered.
    pub fn stop(self) {
        let _ = self.shutdown.send(());
        if self.thread.join().is_err() {
            log::error!("the API's thread panicked");
        }
    }
}

async fn serve(listener: TcpListener, state: Arc<State>, mut stop: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            log::error!("[api]: cannot listen: {error}");
            return;
        }
    };
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return,
            permit = Arc::clone(&connections).acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return };
        let (stream, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    log::warn!("[api]: cannot accept a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        let header_timeout = state.timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(state.handle(request, peer).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                log::debug!(client = peer.to_string(); "[api]: connection ended: {error}");
            }
        });
    }
}

/// What the API serves with: the board it hands pictures to, its limits, the model it describes.
struct State {
    board: Arc<Board>,
    /// One permit per request taken (`queue_limit`).
    taken: Arc<Semaphore>,
    queue_limit: usize,
    token: Option<Secret>,
    max_body_bytes: u64,
    timeout: Duration,
    about: About,
    /// Numbers OpenAI's completion ids.
    completions: AtomicU64,
    stats: Arc<Stats>,
    /// Turns each picture into the encoder's input as soon as it is decoded.
    preprocessor: Preprocessor,
    /// One picture decoded at a time across the API: a decoded picture may take hundreds of MB.
    decoding: Arc<Semaphore>,
}

/// The model as `/api/tags`, `/api/show` and `/v1/models` describe it.
struct About {
    bundle: String,
    precision: String,
    /// The bytes of the loaded precision's files.
    size: u64,
    /// SHA-256 of those files' own hashes, so that another bundle gets another digest.
    digest: String,
    parameters: String,
    loaded_at: SystemTime,
}

impl About {
    fn of(model: &Model) -> About {
        let manifest = &model.bundle.manifest;
        let precision = model.captioner.precision().to_string();
        let mut digest = Sha256::new();
        let mut size = 0;
        if let Some(variant) = manifest.variants.get(&precision) {
            for file in [
                &variant.encoder.file,
                &variant.mapper.file,
                &variant.decoder.file,
                &variant.token_embeddings.file,
            ] {
                if let Some(entry) = manifest.entry(file) {
                    size += entry.bytes;
                    digest.update(entry.sha256.as_bytes());
                }
            }
        }
        let d = &manifest.decoder;
        About {
            bundle: manifest.name.clone(),
            precision,
            size,
            digest: bundle::hex(&digest.finalize()),
            parameters: format!("{}-layer GPT-2, width {}", d.layers, d.width),
            loaded_at: SystemTime::now(),
        }
    }
}

/// Why a request gets no caption: its status and the reason, which each dialect words in its own error shape.
#[derive(Debug)]
pub(super) struct Failure {
    pub status: StatusCode,
    pub message: String,
    /// Seconds, for 503.
    pub retry_after: Option<u64>,
    /// The method the path takes, for 405.
    pub allow: Option<&'static str>,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            retry_after: None,
            allow: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }
}

/// A request's own words for the caption: the model it named, its pictures (each with where it was in the
/// request, for messages) and whether it wants the answer streamed.
pub(super) struct Ask {
    pub model: String,
    pub pictures: Vec<(String, String)>,
    pub stream: bool,
}

/// The caption of a request's pictures.
pub(super) struct Answer {
    /// The captions of distinct pictures, in order, a space apart; a picture sent twice is said once.
    pub text: String,
    pub tokens: usize,
    /// From the request's arrival to its answer.
    pub total: Duration,
    /// The captioner's own time (every stage of every picture).
    pub captioning: Duration,
}

impl Answer {
    fn of(captions: &[Caption], arrived: Instant) -> Answer {
        let mut said: Vec<&str> = Vec::new();
        for caption in captions {
            if !said.contains(&caption.text.as_str()) {
                said.push(&caption.text);
            }
        }
        let milliseconds: f64 = captions.iter().map(|c| c.timings.total()).sum();
        Answer {
            text: said.join(" "),
            tokens: captions.iter().map(|c| c.tokens.len()).sum(),
            total: arrived.elapsed(),
            captioning: Duration::from_secs_f64(milliseconds / 1e3),
        }
    }
}

/// The POST endpoints, which read a body.
enum Endpoint {
    Generate,
    Chat,
    Show,
    Pull,
    Completions,
}

/// What the request's head allows.
enum Admitted {
    Answered(Response),
    /// Its body is to be read; a caption's request holds its place among `queue_limit`.
    Read(Endpoint, Option<OwnedSemaphorePermit>),
}

/// Which API a path belongs to, for the shape of its errors.
#[derive(Clone, Copy)]
enum Dialect {
    Ollama,
    OpenAi,
}

impl State {
    async fn handle(&self, request: hyper::Request<Incoming>, peer: SocketAddr) -> Response {
        let path = request.uri().path().to_string();
        let dialect = if path.starts_with("/v1/") {
            Dialect::OpenAi
        } else {
            Dialect::Ollama
        };
        let arrived = Instant::now();
        let method = request.method().clone();
        let outcome = self.route(request, arrived).await;
        let client = peer.to_string();
        match outcome {
            Ok(response) => {
                let ms = arrived.elapsed().as_secs_f64() * 1e3;
                // The pictures' answers are the API's captions, logged as the cameras' are; the rest is chatter.
                let level = if method == Method::POST {
                    log::Level::Info
                } else {
                    log::Level::Debug
                };
                log::log!(level, client, method = method.as_str(), path, status = response.status().as_u16(),
                    ms = format!("{ms:.0}"); "[api]: answered");
                response
            }
            Err(failure) => {
                let status = failure.status.as_u16();
                self.stats.api_refused(status);
                if failure.status.is_server_error() {
                    log::warn!(client, method = method.as_str(), path, status; "[api]: {}", failure.message);
                } else {
                    log::info!(client, method = method.as_str(), path, status; "[api]: {}", failure.message);
                }
                let mut response = match dialect {
                    Dialect::Ollama => ollama::error(&failure),
                    Dialect::OpenAi => openai::error(&failure),
                };
                if let Some(seconds) = failure.retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                if let Some(allow) = failure.allow {
                    response
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static(allow));
                }
                if failure.status == StatusCode::UNAUTHORIZED {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                response
            }
        }
    }

    async fn route(
        &self,
        request: hyper::Request<Incoming>,
        arrived: Instant,
    ) -> Result<Response, Failure> {
        let (parts, body) = request.into_parts();
        let (endpoint, place) = match self.admit(&parts) {
            Ok(Admitted::Answered(response)) => return Ok(response),
            Ok(Admitted::Read(endpoint, place)) => (endpoint, place),
            Err(failure) => {
                // Read past, so that the client hears the refusal instead of a connection reset mid-upload.
                self.drain(body).await;
                return Err(failure);
            }
        };
        let limit = if place.is_some() {
            self.max_body_bytes
        } else {
            SMALL_BODY
        };
        let body = self.body(&parts, body, limit).await?;
        match endpoint {
            Endpoint::Show => Ok(json(
                StatusCode::OK,
                &ollama::show(&ollama::model_of(&body)?, &self.about),
            )),
            Endpoint::Pull => ollama::pull(&body),
            Endpoint::Generate => {
                let (mut ask, prompt) = ollama::generate_request(&body)?;
                drop(body);
                if ask.pictures.is_empty() && prompt.trim().is_empty() {
                    // Ollama's way to load a model ahead of use: ours is always loaded.
                    return Ok(ollama::loaded(&ask.model));
                }
                let answer = self.caption(&mut ask, place, arrived).await?;
                Ok(ollama::generate_response(&ask, &answer))
            }
            Endpoint::Chat => {
                let mut ask = ollama::chat_request(&body)?;
                drop(body);
                let answer = self.caption(&mut ask, place, arrived).await?;
                Ok(ollama::chat_response(&ask, &answer))
            }
            Endpoint::Completions => {
                let (mut ask, usage) = openai::completion_request(&body)?;
                drop(body);
                let answer = self.caption(&mut ask, place, arrived).await?;
                let number = self.completions.fetch_add(1, Ordering::Relaxed);
                Ok(openai::completion_response(&ask, &answer, number, usage))
            }
        }
    }

    /// What can be answered from the request's head: the root, the token, the GET endpoints, an unknown path
    /// or method, a full house. The rest is admitted to have its body read, holding one of `queue_limit`
    /// places from now to its answer so that the bodies in memory stay bounded.
    fn admit(&self, parts: &hyper::http::request::Parts) -> Result<Admitted, Failure> {
        let (method, path) = (&parts.method, parts.uri.path());
        let get = |answer: serde_json::Value| match *method {
            Method::GET | Method::HEAD => Ok(Admitted::Answered(json(StatusCode::OK, &answer))),
            _ => Err(wrong_method(method, path, "GET")),
        };
        // The root answers without a token: it is what health checks and Ollama's clients probe.
        if path == "/" {
            return match *method {
                Method::GET | Method::HEAD => Ok(Admitted::Answered(text(
                    StatusCode::OK,
                    "capdec is running",
                ))),
                _ => Err(wrong_method(method, path, "GET")),
            };
        }
        self.authorize(parts)?;
        let endpoint = match path {
            "/api/version" => return get(ollama::version()),
            "/api/tags" => return get(ollama::tags(&self.about)),
            "/v1/models" => return get(openai::models(&self.about)),
            _ if path.starts_with("/v1/models/") => {
                return get(openai::model(&path["/v1/models/".len()..], &self.about));
            }
            "/api/generate" => Endpoint::Generate,
            "/api/chat" => Endpoint::Chat,
            "/api/show" => Endpoint::Show,
            "/api/pull" => Endpoint::Pull,
            "/v1/chat/completions" => Endpoint::Completions,
            _ => {
                return Err(Failure::new(
                    StatusCode::NOT_FOUND,
                    format!("no such endpoint: {path}"),
                ));
            }
        };
        if method != Method::POST {
            return Err(wrong_method(method, path, "POST"));
        }
        if matches!(endpoint, Endpoint::Show | Endpoint::Pull) {
            // Small bodies and no caption: they need no place, and a busy captioner does not refuse them.
            return Ok(Admitted::Read(endpoint, None));
        }
        match Arc::clone(&self.taken).try_acquire_owned() {
            Ok(place) => {
                log::debug!(path; "[api]: request taken, reading its body");
                Ok(Admitted::Read(endpoint, Some(place)))
            }
            Err(_) => Err(self.busy()),
        }
    }

    fn authorize(&self, parts: &hyper::http::request::Parts) -> Result<(), Failure> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match given {
            Some(given) if same_secret(given.trim().as_bytes(), token.expose().as_bytes()) => {
                Ok(())
            }
            Some(_) => Err(Failure::new(StatusCode::UNAUTHORIZED, "wrong bearer token")),
            None => Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "this API wants `Authorization: Bearer <token>` (the token of [api] bearer_token)",
            )),
        }
    }

    /// Reads and forgets a refused request's body, up to the body limit and for at most a second.
    async fn drain(&self, mut body: Incoming) {
        let limit = self.max_body_bytes;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut read = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |data| data.len() as u64);
                if read > limit {
                    return;
                }
            }
        })
        .await;
    }

    fn busy(&self) -> Failure {
        Failure {
            retry_after: Some(1),
            ..Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "busy: {} requests are being captioned or waiting (api.queue_limit); try again shortly",
                    self.queue_limit
                ),
            )
        }
    }

    /// The whole body, refused when over the limit (413) or slower than the timeout (408).
    async fn body(
        &self,
        parts: &hyper::http::request::Parts,
        body: Incoming,
        limit: u64,
    ) -> Result<Bytes, Failure> {
        let too_large = |size: String| {
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is {size}, more than the {:.1} MB accepted (api.max_body_mb)",
                    limit as f64 / 1e6
                ),
            )
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if let Some(length) = declared.filter(|&length| length > limit) {
            return Err(too_large(format!("{length} bytes")));
        }
        let limited = Limited::new(body, limit as usize);
        match tokio::time::timeout(self.timeout, limited.collect()).await {
            Err(_) => Err(Failure::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s (api.timeout_s)",
                    self.timeout.as_secs_f64()
                ),
            )),
            Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
                Err(too_large("longer".into()))
            }
            Ok(Err(error)) => Err(Failure::bad_request(format!(
                "cannot read the request body: {error}"
            ))),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }

    /// The caption of a request's pictures: decoded and preprocessed here, one picture at a time across the API
    /// (decoding may take hundreds of MB), then captioned in their turn on the board, holding `place` until the
    /// captioner is done with them.
    async fn caption(
        &self,
        ask: &mut Ask,
        place: Option<OwnedSemaphorePermit>,
        arrived: Instant,
    ) -> Result<Answer, Failure> {
        if ask.pictures.is_empty() {
            return Err(Failure::bad_request(
                "no picture: capdec captions pictures (CapDec is not promptable), so send one \
                 (Ollama: `images`, base64; OpenAI: an `image_url` part with a data: URL)",
            ));
        }
        let sent = ask.pictures.len();
        let pictures = spaced(std::mem::take(&mut ask.pictures), MAX_PICTURES);
        if pictures.len() < sent {
            log::debug!(sent, captioned = pictures.len(); "[api]: many pictures: an evenly spaced few captioned");
        }
        let left = || self.timeout.saturating_sub(arrived.elapsed());
        let late = || {
            Failure::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "no caption within {} s (api.timeout_s); {} requests are waiting for the captioner",
                    self.timeout.as_secs_f64(),
                    self.board.waiting_requests()
                ),
            )
        };
        let (preprocessor, decoding) = (self.preprocessor.clone(), Arc::clone(&self.decoding));
        let prepared = tokio::time::timeout(left(), async move {
            // The turn goes with the blocking task, so that a request that timed out still holds it until its
            // decoding has really ended.
            let turn = decoding.acquire_owned().await;
            tokio::task::spawn_blocking(move || {
                let _turn = turn;
                pictures::prepare_all(&pictures, &preprocessor)
            })
            .await
        })
        .await;
        let prepared = match prepared {
            Err(_) => return Err(late()),
            Ok(Err(error)) => {
                return Err(Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("decoding the pictures failed: {error}"),
                ));
            }
            Ok(Ok(prepared)) => prepared?,
        };
        if left().is_zero() {
            return Err(late());
        }
        let (reply, answer) = oneshot::channel();
        let request = Request {
            pictures: prepared,
            reply,
            place,
        };
        if self.board.submit(request).is_err() {
            return Err(stopping());
        }
        match tokio::time::timeout(left(), answer).await {
            Err(_) => Err(late()),
            Ok(Err(_)) => Err(stopping()),
            Ok(Ok(Err(error))) => Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("captioning failed: {error:#}"),
            )),
            Ok(Ok(Ok(captions))) => {
                let answer = Answer::of(&captions, arrived);
                self.stats.api_answered(answer.total.as_secs_f64() * 1e3);
                Ok(answer)
            }
        }
    }
}

/// At most `most` of `items`, evenly spaced, the first and the last kept: a caller's frames of one moment.
fn spaced<T>(items: Vec<T>, most: usize) -> Vec<T> {
    let count = items.len();
    if count <= most || most < 2 {
        return items.into_iter().take(most.max(1)).collect();
    }
    let kept: std::collections::BTreeSet<usize> =
        (0..most).map(|k| k * (count - 1) / (most - 1)).collect();
    items
        .into_iter()
        .enumerate()
        .filter_map(|(index, item)| kept.contains(&index).then_some(item))
        .collect()
}

fn stopping() -> Failure {
    Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the daemon is stopping: no caption",
    )
}

fn wrong_method(method: &Method, path: &str, allowed: &'static str) -> Failure {
    Failure {
        allow: Some(allowed),
        ..Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} takes {allowed}, not {method}"),
        )
    }
}

/// Compares every byte whatever the first difference, so that the time taken does not tell how much matched.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |differs, (a, b)| differs | (a ^ b))
            == 0
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    respond(status, "application/json", value.to_string().into_bytes())
}

fn text(status: StatusCode, body: &str) -> Response {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

/// Ollama's streamed answers: one JSON object a line.
pub(super) fn ndjson(lines: &[serde_json::Value]) -> Response {
    let mut body = Vec::new();
    for line in lines {
        body.extend_from_slice(line.to_string().as_bytes());
        body.push(b'\n');
    }
    respond(StatusCode::OK, "application/x-ndjson", body)
}

/// OpenAI's streamed answers: server-sent events, ending with `[DONE]`.
pub(super) fn server_sent_events(events: &[serde_json::Value]) -> Response {
    let mut body = Vec::new();
    for event in events {
        body.extend_from_slice(format!("data: {event}\n\n").as_bytes());
    }
    body.extend_from_slice(b"data: [DONE]\n\n");
    respond(StatusCode::OK, "text/event-stream", body)
}

/// The body as JSON of the shape `T`, or 400 naming what is wrong and where.
pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|error| {
        Failure::bad_request(format!(
            "the request body is not what was expected: {error}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_many_pictures_an_evenly_spaced_few_with_the_first_and_the_last() {
        let all: Vec<usize> = (0..40).collect();
        let kept = spaced(all, 16);
        assert_eq!(kept.len(), 16);
        assert_eq!((kept[0], kept[15]), (0, 39));
        assert!(
            kept.windows(2)
                .all(|pair| (2..=3).contains(&(pair[1] - pair[0]))),
            "{kept:?}"
        );
        assert_eq!(spaced(vec![1, 2, 3], 16), [1, 2, 3]);
        assert_eq!(spaced(vec![1, 2, 3], 1), [1]);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"token", b"tokeN"));
        assert!(!same_secret(b"tok", b"token"));
    }
}
