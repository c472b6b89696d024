//! OpenAI's chat completions as its clients call them (`openai` on PyPI, and the OpenAI-compatible providers of
//! Frigate and Home Assistant's LLM Vision): pictures as `image_url` parts holding `data:` URLs (the daemon
//! fetches nothing from the network), text parts read and not used, the caption as the assistant's message;
//! `stream: true` as server-sent events of the caption in one piece, the finish and `[DONE]`.

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{About, Answer, Ask, Failure, MODEL_NAME, Response, json, parse, server_sent_events};

#[derive(Deserialize)]
struct CompletionRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct Message {
    /// A string (text only, no picture) or a list of parts.
    content: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    ImageUrl {
        image_url: ImageUrl,
    },
    /// Text, audio, files: read and not used.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ImageUrl {
    Object { url: String },
    Plain(String),
}

/// What the answer should carry beside the caption.
pub(super) struct Usage {
    /// The stream ends with a chunk of token counts.
    include_usage: bool,
}

/// The pictures of the last message that has any.
pub(super) fn completion_request(body: &[u8]) -> Result<(Ask, Usage), Failure> {
    let request: CompletionRequest = parse(body)?;
    let mut pictures = Vec::new();
    for (message, m) in request.messages.into_iter().enumerate().rev() {
        let Some(content @ serde_json::Value::Array(_)) = m.content else {
            continue;
        };
        let parts: Vec<Part> = serde_json::from_value(content).map_err(|error| {
            Failure::bad_request(format!("messages[{message}].content: {error}"))
        })?;
        for (index, part) in parts.into_iter().enumerate() {
            let Part::ImageUrl { image_url } = part else {
                continue;
            };
            let (ImageUrl::Object { url } | ImageUrl::Plain(url)) = image_url;
            let place = format!("messages[{message}].content[{index}].image_url");
            if !url.starts_with("data:") {
                return Err(Failure::bad_request(format!(
                    "{place}: only data: URLs are captioned (`data:image/jpeg;base64,...`): the daemon \
                     fetches nothing from the network"
                )));
            }
            pictures.push((place, url));
        }
        if !pictures.is_empty() {
            break;
        }
    }
    let usage = Usage {
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
    };
    let ask = Ask {
        model: request.model,
        pictures,
        stream: request.stream,
    };
    Ok((ask, usage))
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn completion_response(
    ask: &Ask,
    answer: &Answer,
    number: u64,
    usage: Usage,
) -> Response {
    let id = format!("chatcmpl-capdec-{number}");
    let created = unix_seconds(SystemTime::now());
    let counts = json!({
        "prompt_tokens": 0,
        "completion_tokens": answer.tokens,
        "total_tokens": answer.tokens,
    });
    if !ask.stream {
        return json(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": ask.model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text, "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": counts,
            }),
        );
    }
    let chunk = |choices: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": ask.model,
            "choices": choices,
        })
    };
    let mut events = vec![
        chunk(json!([{
            "index": 0,
            "delta": {"role": "assistant", "content": answer.text},
            "logprobs": null,
            "finish_reason": null,
        }])),
        chunk(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}])),
    ];
    if usage.include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = counts;
        events.push(last);
    }
    server_sent_events(&events)
}

fn describe(id: &str, about: &About) -> Value {
    json!({
        "id": id,
        "object": "model",
        "created": unix_seconds(about.loaded_at),
        "owned_by": "capdec-edge",
    })
}

pub(super) fn models(about: &About) -> Value {
    json!({"object": "list", "data": [describe(MODEL_NAME, about)]})
}

/// Every name is the one model.
pub(super) fn model(id: &str, about: &About) -> Value {
    describe(id, about)
}

pub(super) fn error(failure: &Failure) -> Response {
    let kind = match failure.status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::NOT_FOUND => "not_found_error",
        status if status.is_server_error() => "server_error",
        _ => "invalid_request_error",
    };
    json(
        failure.status,
        &json!({"error": {"message": failure.message, "type": kind, "param": null, "code": null}}),
    )
}
