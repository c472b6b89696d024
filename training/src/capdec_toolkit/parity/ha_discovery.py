"""The daemon's MQTT discovery messages checked by Home Assistant's own schemas.

`scripts/ha-python -m capdec_toolkit.parity.ha_discovery MESSAGES.json` (run by tests/home_assistant.rs, in an
environment of its own with Home Assistant 2024.3.3: scripts/ha-python) reads a JSON list of `{"topic",
"payload"}` as the daemon published them under `homeassistant/`, validates each payload with the
`DISCOVERY_SCHEMA` of the platform its topic names (`homeassistant.components.mqtt.<platform>`), after expanding
the abbreviations Home Assistant expands, and prints one JSON object: each message's platform and the keys Home
Assistant kept, and every error. Home Assistant drops keys it does not know without a word, so a key the daemon
sent and the schema dropped is an error here too. Exits 1 when there is any error."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any


def _expand(payload: dict[str, Any]) -> dict[str, Any]:
    from homeassistant.components.mqtt.abbreviations import ABBREVIATIONS, DEVICE_ABBREVIATIONS

    expanded = {ABBREVIATIONS.get(key, key): value for key, value in payload.items()}
    for block, abbreviations in (("device", DEVICE_ABBREVIATIONS), ("origin", DEVICE_ABBREVIATIONS)):
        if isinstance(expanded.get(block), dict):
            expanded[block] = {abbreviations.get(key, key): value for key, value in expanded[block].items()}
    return expanded


def check(messages: list[dict[str, Any]]) -> dict[str, Any]:
    import voluptuous as vol

    checked: list[dict[str, Any]] = []
    errors: list[str] = []
    for message in messages:
        topic = str(message["topic"])
        parts = topic.split("/")
        if len(parts) not in (4, 5) or parts[-1] != "config":
            errors.append(f"{topic}: not a discovery topic (<prefix>/<component>/[<node_id>/]<object_id>/config)")
            continue
        platform = parts[1]
        try:
            module = importlib.import_module(f"homeassistant.components.mqtt.{platform}")
        except ImportError:
            errors.append(f"{topic}: Home Assistant's MQTT integration has no platform `{platform}`")
            continue
        payload = _expand(json.loads(message["payload"]))
        try:
            validated = module.DISCOVERY_SCHEMA(payload)
        except vol.Invalid as error:
            errors.append(f"{topic}: {error}")
            continue
        dropped = sorted(set(payload) - set(validated))
        if dropped:
            errors.append(f"{topic}: keys Home Assistant does not know and drops: {', '.join(dropped)}")
            continue
        checked.append({"topic": topic, "platform": platform, "kept": sorted(payload)})
    return {"checked": checked, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python -m capdec_toolkit.parity.ha_discovery MESSAGES.json", file=sys.stderr)
        return 2
    report = check(json.loads(Path(arguments[0]).read_text()))
    print(json.dumps(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
