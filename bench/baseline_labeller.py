"""ms/report of the rule-based labeller (daemon.evaluation.baseline), against a reference version from git.

    python bench/baseline_labeller.py [--reports 300] [--rounds 7] [--reference 796f3b2]

The reference is `daemon/evaluation/baseline.py` as of a commit (by default the last one before the
literal prefilter), loaded from `git show` into a module of its own, so both versions run in the same
process on the same texts, rounds interleaved; the figure per version is the best round (least
disturbed by other work on the machine). Texts: `generate_corpus(reports, 777)`, the classifier
benchmark's seed. It also checks that both versions give the same mentions on these texts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from daemon.evaluation import baseline  # noqa: E402
from daemon.training.generator import generate_corpus  # noqa: E402

BENCH_SEED = 777
REFERENCE = "796f3b2"  # before the literal prefilter


def load_reference(commit: str, directory: Path) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{commit}:daemon/evaluation/baseline.py"], cwd=REPO_ROOT, check=True,
        capture_output=True, text=True,
    ).stdout
    path = directory / "baseline_reference.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("baseline_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def one_round(score: Callable[[str], dict[str, float]], texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        score(text)
    return (time.perf_counter() - start) * 1000 / len(texts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reference", default=REFERENCE, help="git commit of the reference version")
    args = parser.parse_args()
    texts = [report.text for report in generate_corpus(args.reports, BENCH_SEED)]
    with tempfile.TemporaryDirectory() as tmp:
        reference = load_reference(args.reference, Path(tmp))
        same = all(
            [(m.label, m.text, m.status, m.sentence) for m in reference.extract_mentions(text)]
            == [(m.label, m.text, m.status, m.sentence) for m in baseline.extract_mentions(text)]
            for text in texts
        )
        rounds: dict[str, list[float]] = {"reference": [], "current": []}
        for _ in range(args.rounds):
            rounds["reference"].append(one_round(reference.score_report, texts))
            rounds["current"].append(one_round(baseline.score_report, texts))
    best = {name: min(values) for name, values in rounds.items()}
    result = {
        "reports": len(texts),
        "mean_words": round(sum(len(text.split()) for text in texts) / len(texts), 1),
        "rounds": args.rounds,
        "reference_commit": args.reference,
        "reference_ms_per_report": round(best["reference"], 3),
        "current_ms_per_report": round(best["current"], 3),
        "speedup": round(best["reference"] / best["current"], 2),
        "same_mentions": same,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
