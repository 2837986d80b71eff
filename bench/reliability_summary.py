"""Markdown tables from the figures the reliability tests write (NEUROLABEL_FIGURES=DIR).

    python bench/reliability_summary.py DIR > summary.md

Each test writes DIR/<test>.json (tests/reliability/conftest.py: Figures); this prints one section per
area with the numbers docs/reliability.md quotes, and writes every figure into DIR/all.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def load(folder: Path) -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json")) if path.stem != "all"}


def find(figures: dict[str, dict[str, Any]], prefix: str) -> dict[str, Any]:
    for name, values in figures.items():
        if name.startswith(prefix):
            return values
    return {}


def table(rows: list[tuple[str, object]]) -> str:
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows if value not in (None, {}, [])]
    return "\n".join(lines)


def main(folder: Path) -> None:
    figures = load(folder)
    (folder / "all.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    out: list[str] = []
    versions = {values.get("version") for values in figures.values() if values.get("version")}
    out.append(f"Version: {', '.join(sorted(versions)) or '?'}; machine: {os.cpu_count()} CPUs, "
               f"{platform.processor() or platform.machine()}, Python {platform.python_version()}.\n")

    crash = find(figures, "kill_9")
    out.append("### Crash (kill -9)\n")
    out.append(table([
        ("cycles survived (kill -9, restart)", crash.get("kills")),
        ("jobs interrupted while running", f"{crash.get('jobs_interrupted')} {crash.get('jobs_interrupted_by_kind')}"),
        ("HL7 messages acknowledged / resends", f"{crash.get('hl7_acknowledged')} / {crash.get('hl7_resends')}"),
        ("instances acknowledged / resends", f"{crash.get('instances_acknowledged')} / {crash.get('store_resends')}"),
        ("studies labelled, SRs (one each)", f"{crash.get('studies_labelled')}, {crash.get('srs')}"),
        ("longest restart to ready (s)", crash.get("restart_seconds_max")),
        ("run (s)", crash.get("seconds")),
    ]))

    out.append("\n### Faults\n")
    triton = find(figures, "triton_killed")
    lock = find(figures, "database_locked")
    disk = find(figures, "disk_full")
    rows: list[tuple[str, object]] = [
        ("Triton down (s) / reports waiting", f"{triton.get('triton_down_seconds')} / {triton.get('reports_waiting')}"),
        ("labelled after Triton was back (s)", triton.get("seconds_to_label_after_restart")),
        ("classify jobs failed", triton.get("classify_jobs_failed")),
    ]
    for held in lock.get("locks", []):
        rows.append((f"database locked {held['seconds']} s: HL7 answers, C-STORE statuses, slowest answer (s)",
                     f"{held['hl7_answers']}, {held['store_statuses']}, {held['slowest_answer_seconds']}"))
    rows += [
        ("disk full: own filesystem, 0xA700 answers",
         f"{disk.get('own_filesystem')}, {disk.get('out_of_resources_answers')}"),
        ("accepting again after space returned (s)", disk.get("seconds_to_accept_after_space_returned")),
    ]
    out.append(table(rows))

    out.append("\n### Bad input\n")
    rows = []
    total = 0
    for name, values in figures.items():
        if "cases" in values and ("properties" in name or "intake_answers" in name):
            rows.append((f"hypothesis: {name}", values["cases"]))
            total += int(values["cases"])
        if name.startswith("atheris"):
            rows.append((f"atheris {values.get('target')}: runs in s, coverage edges",
                         f"{values.get('runs')} in {values.get('seconds')}, {values.get('coverage_edges')}"))
            total += int(values.get("runs", 0))
    rows.append(("fuzz cases in all", total))
    malformed = find(figures, "malformed_dicom")
    hostile = find(figures, "hostile_hl7")
    rows.append(("malformed DICOM cases (all answered, audited)", malformed.get("cases")))
    rows.append(("hostile HL7 over MLLP cases", hostile.get("cases")))
    out.append(table(rows))

    out.append("\n### Access\n")
    tls = find(figures, "tls_required")
    privacy = find(figures, "privacy_scan")
    out.append(table([
        ("TLS outcomes", json.dumps(tls.get("outcomes"))),
        ("privacy scan: daemons, files, bytes, audit rows, hits",
         f"{privacy.get('daemons')}, {privacy.get('files')}, {privacy.get('bytes')}, {privacy.get('audit_rows')}, "
         f"{privacy.get('hits')}"),
    ]))

    soak = find(figures, "soak")
    out.append("\n### Soak\n")
    rss = soak.get("rss_mb", {})
    out.append(table([
        ("duration (s), cases, instances",
         f"{soak.get('duration_seconds')}, {soak.get('cases')}, {soak.get('instances')}"),
        ("studies labelled", soak.get("studies_labelled")),
        ("RSS first / last window / max (MB)",
         f"{rss.get('first_window')} / {rss.get('last_window')} / {rss.get('max')}"),
        ("RSS growth (MB)", rss.get("growth")),
        ("labelling delay p50 / p95 / max (s)", json.dumps(soak.get("labelling_delay_seconds"))),
    ]))
    minutes = soak.get("latency_per_minute", [])
    if minutes:
        out.append("\n| minute | HL7 ACK p50 / p95 (ms) | C-STORE p50 / p95 (ms) | messages, instances | RSS (MB) |")
        out.append("|---|---|---|---|---|")
        for row in minutes:
            out.append(f"| {row['minute']} | {row['hl7']['p50_ms']} / {row['hl7']['p95_ms']} | "
                       f"{row['dicom']['p50_ms']} / {row['dicom']['p95_ms']} | "
                       f"{row['hl7']['count']}, {row['dicom']['count']} | {row.get('rss_mb', '')} |")
    print("\n".join(out))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "var/reliability-long"))
