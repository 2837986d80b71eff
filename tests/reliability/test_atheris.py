"""Coverage-guided fuzzing with atheris (libFuzzer) of the HL7 parser and the MLLP frame extractor.

Each target runs in its own process (atheris takes it over) from a seed corpus of real vendor messages,
with a per-input time limit (a hang is a failure) and a memory limit (an input that blows memory up is a
failure). Skipped where atheris does not install (`pip install atheris`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.hl7.framing import frame
from tests.conftest import REPO_ROOT
from tests.hl7.messages import ERROR_CASES, VENDOR_CASES
from tests.reliability.conftest import Figures, scaled

pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")

RUNS = {"parse": scaled(15_000, 300_000), "mllp": scaled(40_000, 500_000)}
MAX_SECONDS = scaled(60, 1200)


def seed_corpus(folder: Path, target: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    messages = [raw for raw, _ in VENDOR_CASES.values()] + [raw for raw, *_ in ERROR_CASES.values()]
    for number, raw in enumerate(messages):
        # The mllp target reads three bytes of choices (limit, cuts) before the stream.
        (folder / f"seed-{number}").write_bytes(raw if target == "parse" else b"\x02\x03\x10" + frame(raw) * 2)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("target", ["parse", "mllp"])
def test_atheris_finds_no_crash(target: str, tmp_path: Path, figures: Figures) -> None:
    corpus = seed_corpus(tmp_path / "corpus", target)
    command = [
        sys.executable, "-m", "tests.reliability.atheris_targets", target,
        f"-atheris_runs={RUNS[target]}", f"-max_total_time={MAX_SECONDS}", "-max_len=4096",
        "-timeout=10", "-rss_limit_mb=1536", f"-artifact_prefix={tmp_path}/", str(corpus),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=MAX_SECONDS + 120,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    output = result.stdout + result.stderr
    done = re.search(r"Done (\d+) (?:runs )?in (\d+) second", output)
    # libFuzzer's per-input alarm can go off while Python shuts down after the last run, "Done" printed: not a
    # finding. A real hang is reported as "ERROR: libFuzzer: timeout" (exit code 70) with a timeout- artifact.
    alarm_after_done = result.returncode == -signal.SIGALRM and done is not None and "ERROR: libFuzzer" not in output
    assert result.returncode == 0 or alarm_after_done, output[-4000:]
    assert done, output[-2000:]
    findings = [path.name for pattern in ("crash-*", "timeout-*", "oom-*", "leak-*") for path in tmp_path.glob(pattern)]
    assert not findings, findings
    coverage = re.findall(r"cov: (\d+)", output)
    figures.record(target=target, runs=int(done.group(1)), seconds=int(done.group(2)),
                   coverage_edges=int(coverage[-1]) if coverage else None,
                   corpus_files=len(list(corpus.iterdir())))
