"""`neurolabel status`: asks the running daemon's HTTP endpoint, renders what it says."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from daemon.config import Config


def fetch_status(config: Config, timeout: float = 5.0) -> dict[str, Any]:
    """The daemon's /status document, or a not-ready document saying why it could not be had."""
    host = config.metrics.host if config.metrics.host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{host}:{config.metrics.port}/status"
    if not config.metrics.enabled:
        return {"ready": False, "error": "[metrics] enabled = false: the daemon exposes no status endpoint"}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL from config
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        return dict(json.load(exc)) if exc.code == 503 else {"ready": False, "error": f"{url}: HTTP {exc.code}"}
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"ready": False, "error": f"daemon not reachable at {url} ({reason})"}


def render_status(status: dict[str, Any]) -> None:
    console = Console()
    if "error" in status:
        console.print(f"[red]not ready[/red]: {status['error']}")
        return
    table = Table(title=f"neurolabel {status.get('instance', '')}")
    table.add_column("component")
    table.add_column("state")
    table.add_column("detail")
    for name, item in status.get("components", {}).items():
        table.add_row(name, "[green]up[/green]" if item["up"] else "[red]down[/red]", str(item.get("detail", "")))
    console.print(table)
    queue = status.get("queue", {})
    if queue:
        jobs = Table(title="work queue")
        jobs.add_column("kind")
        for state in ("pending", "running", "done", "failed"):
            jobs.add_column(state, justify="right")
        for kind, counts in sorted(queue.items()):
            jobs.add_row(kind, *(str(counts.get(s, 0)) for s in ("pending", "running", "done", "failed")))
        console.print(jobs)
    console.print("ready" if status.get("ready") else "[red]not ready[/red]")
