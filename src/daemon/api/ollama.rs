//! Ollama's API as its clients call it (`ollama` on PyPI, which Frigate's and Home Assistant's Ollama providers
//! use): request shapes read leniently (options, format, keep_alive and the like are accepted and not used),
//! answers with the fields its clients read. Ollama streams unless asked not to, so a request without `stream`
//! gets NDJSON; the caption comes in one piece, then the closing line, since beam search settles the words only
//! at the end.

use std::time::{Duration, SystemTime};

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{About, Answer, Ask, Failure, MODEL_NAME, Response, VERSION, json, ndjson, parse};

#[derive(Deserialize)]
struct GenerateRequest {
    model: String,
    prompt: Option<String>,
    images: Option<Vec<String>>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct ChatMessage {
    images: Option<Vec<String>>,
}

/// `/api/show` and `/api/pull` name the model as `model`, or as `name` in older clients.
#[derive(Deserialize)]
struct ModelRequest {
    model: Option<String>,
    name: Option<String>,
    stream: Option<bool>,
}

/// `/api/generate`'s request and its prompt (read, not used; an empty one without pictures asks to load).
pub(super) fn generate_request(body: &[u8]) -> Result<(Ask, String), Failure> {
    let request: GenerateRequest = parse(body)?;
    let pictures = request
        .images
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, text)| (format!("images[{index}]"), text))
        .collect();
    let ask = Ask {
        model: request.model,
        pictures,
        stream: request.stream.unwrap_or(true),
    };
    Ok((ask, request.prompt.unwrap_or_default()))
}

/// `/api/chat`'s request: the pictures of the last message that has any (earlier turns' pictures were answered
/// then).
pub(super) fn chat_request(body: &[u8]) -> Result<Ask, Failure> {
    let request: ChatRequest = parse(body)?;
    let pictures = request
        .messages
        .iter()
        .enumerate()
        .rev()
        .find_map(|(message, m)| {
            let images = m.images.as_ref().filter(|images| !images.is_empty())?;
            Some(
                images
                    .iter()
                    .enumerate()
                    .map(|(index, text)| {
                        (format!("messages[{message}].images[{index}]"), text.clone())
                    })
                    .collect(),
            )
        })
        .unwrap_or_default();
    Ok(Ask {
        model: request.model,
        pictures,
        stream: request.stream.unwrap_or(true),
    })
}

pub(super) fn model_of(body: &[u8]) -> Result<String, Failure> {
    let request: ModelRequest = parse(body)?;
    request
        .model
        .or(request.name)
        .ok_or_else(|| Failure::bad_request("no `model` named"))
}

fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn nanoseconds(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The closing line's figures, in Ollama's nanoseconds: the model is always loaded, the prompt is not read.
fn closing(ask: &Ask, answer: &Answer) -> Value {
    json!({
        "model": ask.model,
        "created_at": now(),
        "done": true,
        "done_reason": "stop",
        "total_duration": nanoseconds(answer.total),
        "load_duration": 0,
        "prompt_eval_count": 0,
        "prompt_eval_duration": 0,
        "eval_count": answer.tokens,
        "eval_duration": nanoseconds(answer.captioning),
    })
}

/// `answer` under `key`, whole or as a stream of the text then the closing line (where `key` holds `empty`).
fn respond(ask: &Ask, answer: &Answer, key: &str, said: Value, empty: Value) -> Response {
    let mut last = closing(ask, answer);
    if ask.stream {
        let piece = json!({"model": ask.model, "created_at": now(), key: said, "done": false});
        last[key] = empty;
        ndjson(&[piece, last])
    } else {
        last[key] = said;
        json(StatusCode::OK, &last)
    }
}

pub(super) fn generate_response(ask: &Ask, answer: &Answer) -> Response {
    respond(ask, answer, "response", json!(answer.text), json!(""))
}

pub(super) fn chat_response(ask: &Ask, answer: &Answer) -> Response {
    let message = |content: &str| json!({"role": "assistant", "content": content});
    respond(ask, answer, "message", message(&answer.text), message(""))
}

/// `/api/generate` without prompt or picture: Ollama loads the model and says so.
pub(super) fn loaded(model: &str) -> Response {
    json(
        StatusCode::OK,
        &json!({"model": model, "created_at": now(), "response": "", "done": true, "done_reason": "load"}),
    )
}

/// Every name is the one model; Ollama's clients name it with its tag.
fn tagged() -> String {
    format!("{MODEL_NAME}:latest")
}

fn details(about: &About) -> Value {
    json!({
        "parent_model": "",
        "format": "onnx",
        "family": "capdec",
        "families": ["capdec"],
        "parameter_size": about.parameters,
        "quantization_level": about.precision,
    })
}

fn modified_at(about: &About) -> String {
    humantime::format_rfc3339_seconds(about.loaded_at).to_string()
}

pub(super) fn tags(about: &About) -> Value {
    json!({"models": [{
        "name": tagged(),
        "model": tagged(),
        "modified_at": modified_at(about),
        "size": about.size,
        "digest": about.digest,
        "details": details(about),
    }]})
}

pub(super) fn show(model: &str, about: &About) -> Value {
    json!({
        "modelfile": format!("# {model}: capdec-edge, bundle {} ({})", about.bundle, about.precision),
        "parameters": "",
        "template": "",
        "details": details(about),
        "model_info": {"general.architecture": "capdec", "general.basename": about.bundle},
        "capabilities": ["completion", "vision"],
        "modified_at": modified_at(about),
    })
}

/// `/api/pull`: the model is here already (Frigate pulls the model it is configured with before using it).
pub(super) fn pull(body: &[u8]) -> Result<Response, Failure> {
    let request: ModelRequest = parse(body)?;
    let success = json!({"status": "success"});
    Ok(if request.stream.unwrap_or(true) {
        ndjson(&[success])
    } else {
        json(StatusCode::OK, &success)
    })
}

pub(super) fn version() -> Value {
    json!({"version": VERSION})
}

pub(super) fn error(failure: &Failure) -> Response {
    json(failure.status, &json!({"error": failure.message}))
}
