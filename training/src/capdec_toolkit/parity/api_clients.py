"""The daemon's HTTP API through the real clients of the programs that call it: `ollama` (Frigate's and Home
Assistant's Ollama providers) and `openai` (OpenAI-compatible providers) from PyPI.

`scripts/toolkit api-clients --url URL --image FILE` asks for the picture's caption every way those clients can
(generate and chat, whole and streamed; chat completions, whole and streamed), lists and shows the model, and
sends what must be refused (a picture that is none; a wrong token where one is set). It prints one JSON object:
what each call got back, so that the Rust test (tests/api.rs) can compare every answer with the caption that
`capdec caption` gives the same picture, and every refusal with its status."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

MODEL = "capdec"
PROMPT = "Describe what you see in one sentence."


def _ollama(url: str, picture: bytes, token: str | None) -> dict[str, Any]:
    import ollama

    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = ollama.Client(host=url, headers=headers, timeout=120)
    said: dict[str, Any] = {}
    said["generate"] = client.generate(model=MODEL, prompt=PROMPT, images=[picture], stream=False).response
    said["generate_stream"] = "".join(
        part.response or "" for part in client.generate(model=MODEL, prompt=PROMPT, images=[picture], stream=True)
    )
    message = {"role": "user", "content": PROMPT, "images": [picture]}
    said["chat"] = client.chat(model=MODEL, messages=[message], stream=False).message.content
    said["chat_stream"] = "".join(
        part.message.content or "" for part in client.chat(model=MODEL, messages=[message], stream=True)
    )
    said["models"] = [model.model for model in client.list().models]
    said["capabilities"] = list(client.show(MODEL).capabilities or [])
    said["pull"] = client.pull(MODEL).status
    try:
        client.generate(model=MODEL, prompt=PROMPT, images=[b"this is no picture"], stream=False)
        said["not_a_picture"] = {"status": 200}
    except ollama.ResponseError as error:
        said["not_a_picture"] = {"status": error.status_code, "error": error.error}
    try:
        client.generate(model=MODEL, prompt=PROMPT, stream=False)
        said["no_picture"] = {"status": 200}
    except ollama.ResponseError as error:
        said["no_picture"] = {"status": error.status_code, "error": error.error}
    return said


def _openai(url: str, picture: bytes, media_type: str, token: str | None) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=token or "unused", max_retries=0, timeout=120)

    def ask(data_url: str) -> list[dict[str, Any]]:
        parts = [{"type": "text", "text": PROMPT}, {"type": "image_url", "image_url": {"url": data_url}}]
        return [{"role": "user", "content": parts}]

    messages: Any = ask(f"data:{media_type};base64,{base64.b64encode(picture).decode()}")
    said: dict[str, Any] = {}
    completion = client.chat.completions.create(model=MODEL, messages=messages)
    said["chat"] = completion.choices[0].message.content
    said["finish_reason"] = completion.choices[0].finish_reason
    pieces: list[str] = []
    usage = None
    for chunk in client.chat.completions.create(
        model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
    ):
        pieces.extend(choice.delta.content or "" for choice in chunk.choices)
        usage = chunk.usage or usage
    said["chat_stream"] = "".join(pieces)
    said["completion_tokens"] = usage.completion_tokens if usage else None
    said["models"] = [model.id for model in client.models.list()]
    not_a_picture: Any = ask(f"data:image/png;base64,{base64.b64encode(b'no picture').decode()}")
    try:
        client.chat.completions.create(model=MODEL, messages=not_a_picture)
        said["not_a_picture"] = {"status": 200}
    except openai.APIStatusError as error:
        said["not_a_picture"] = {"status": error.status_code, "error": error.message}
    if token:
        stranger = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
        try:
            stranger.chat.completions.create(model=MODEL, messages=messages)
            said["wrong_token"] = {"status": 200}
        except openai.APIStatusError as error:
            said["wrong_token"] = {"status": error.status_code, "error": error.message}
    return said


def run(url: str, image: Path, token: str | None) -> dict[str, Any]:
    picture = image.read_bytes()
    media_type = {".png": "image/png", ".webp": "image/webp"}.get(image.suffix.lower(), "image/jpeg")
    return {"ollama": _ollama(url, picture, token), "openai": _openai(url, picture, media_type, token)}
