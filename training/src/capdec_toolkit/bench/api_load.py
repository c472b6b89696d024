"""Load on a running daemon's `/api/generate`: latency and throughput per number of concurrent clients, and what
the queue does past `queue_limit` (scripts/api-bench; BENCHMARKS.md, "The HTTP API").

Each client sends the same picture again and again for the given seconds, one request at a time, through the
standard library's HTTP client (the timing is the server's, not a client library's). A refused request (503) is
counted and the client waits the `Retry-After` it was given before it tries again, as a polite client would."""

from __future__ import annotations

import base64
import http.client
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass
class ClientLog:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _client(url: str, body: bytes, until: float, log: ClientLog) -> None:
    parts = urlsplit(url)
    while time.monotonic() < until:
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=120)
        start = time.monotonic()
        try:
            connection.request("POST", "/api/generate", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
        except OSError as error:
            log.errors.append(str(error))
            continue
        finally:
            connection.close()
        elapsed = (time.monotonic() - start) * 1e3
        log.statuses[response.status] = log.statuses.get(response.status, 0) + 1
        if response.status == 200:
            log.latencies_ms.append(elapsed)
        elif response.status == 503:
            time.sleep(float(response.getheader("Retry-After") or 1))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(url: str, image: Path, clients: int, seconds: float) -> dict[str, Any]:
    picture = base64.b64encode(image.read_bytes()).decode()
    body = json.dumps({"model": "capdec", "prompt": "describe", "images": [picture], "stream": False}).encode()
    until = time.monotonic() + seconds
    logs = [ClientLog() for _ in range(clients)]
    threads = [threading.Thread(target=_client, args=(url, body, until, log)) for log in logs]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    latencies = [ms for log in logs for ms in log.latencies_ms]
    statuses: dict[int, int] = {}
    for log in logs:
        for status, count in log.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "answered": len(latencies),
        "per_second": round(len(latencies) / wall, 2),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p90_ms": round(_percentile(latencies, 0.9), 1) if latencies else None,
        "max_ms": round(max(latencies), 1) if latencies else None,
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
        "errors": sum(len(log.errors) for log in logs),
    }


def table(bundle: str, results: list[dict[str, Any]]) -> str:
    lines = [
        f"### {bundle}",
        "",
        "| clients | answered | captions/s | p50 ms | p90 ms | max ms | statuses | connection errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        statuses = ", ".join(f"{status}: {count}" for status, count in r["statuses"].items())
        lines.append(
            f"| {r['clients']} | {r['answered']} | {r['per_second']} | {r['p50_ms']} | {r['p90_ms']} | "
            f"{r['max_ms']} | {statuses} | {r['errors']} |"
        )
    return "\n".join(lines)
