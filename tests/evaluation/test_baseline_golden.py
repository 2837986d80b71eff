"""The rule-based labeller's output is pinned: mentions on a fixed set of texts against committed digests.

The speed work on daemon/evaluation/baseline.py (literal prefilters, factored
regexes) must not change a single mention. ``baseline_golden.json`` holds,
per text, a digest of ``extract_mentions`` (label, text, status, sentence) as
the labeller gave them before that work; the texts are the development set,
recombinations of its sentences with awkward separators (the sentence
splitter's and the clause splitter's corner cases), word soups and edge cases.
A test failure names the texts whose mentions changed.

A deliberate change of the rules changes the digests; rewrite them with
``python -m tests.evaluation.test_baseline_golden --write`` and say so in the commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.evaluation import baseline

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVSET = REPO_ROOT / "data" / "devset" / "handwritten.jsonl"
GOLDEN = Path(__file__).with_name("baseline_golden.json")

SEPARATORS = (" ", "\n", "\n\n", ". ", "; ", " - ", " - 1) ", " 2. ", "\n3) ", ".", ", ", ": ", " ? ", "")
EDGE_CASES = (
    "", " ", "\n", ".", ";", "mass", "mass\neffect", "Mass effect.", "acute\nacute infarct", "acute - 1) infarct",
    "acute 1) infarct", "restricted\ndiffusion", "micro.adenoma", "microadenoma", "no\nacute infarct",
    "no acute infarct;acute infarct", "Findings:\nNo mass.", "History: ?MS\nFindings: plaques", "\u0130nfarct.",
    "ACUTE INFARCT", "hemorrhage edema tumor ischemia gray leucoaraiosis epidural favor", "cyst.\nwith mass effect",
    "flow voids\nabsent", "lacunar infarct, acute", "old lacune; recent infarct", "There is a mass but no oedema.",
    "No mass, which is reassuring; infarct although old.", "Possible infarct versus tumour, however unlikely.",
)


def _devset_texts() -> list[tuple[str, str]]:
    with DEVSET.open(encoding="utf-8") as lines:
        return [(record["id"], record["text"]) for record in map(json.loads, lines)]


def golden_texts() -> list[tuple[str, str]]:
    """(id, text): the development set, 600 recombinations, 300 word soups and the edge cases; deterministic."""
    devset = _devset_texts()
    rng = random.Random(20261126)
    sentences = [part for _, text in devset for part in re.split(r"(?<=[.!?])\s+|\n+", text) if part.strip()]
    words = sorted({word for sentence in sentences for word in sentence.split()})
    texts = list(devset)
    for index in range(600):
        picked = [rng.choice(sentences) for _ in range(rng.randint(1, 12))]
        text = "".join(rng.choice(SEPARATORS) + sentence for sentence in picked)
        if index % 3 == 0:
            text = text.upper() if index % 2 else text.lower()
        texts.append((f"mix-{index}", text))
    for index in range(300):
        soup = [rng.choice(words) if rng.random() < 0.85 else rng.choice(SEPARATORS) for _ in range(rng.randint(1, 60))]
        texts.append((f"soup-{index}", " ".join(soup)))
    texts.extend((f"edge-{index}", text) for index, text in enumerate(EDGE_CASES))
    return texts


def mentions_digest(extract: Callable[[str], Sequence[baseline.Mention]], text: str) -> str:
    rows = [[mention.label, mention.text, mention.status, mention.sentence] for mention in extract(text)]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def test_mentions_match_the_golden_digests() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))["digests"]
    texts = golden_texts()
    assert [text_id for text_id, _ in texts] == list(golden), "the golden text set changed: rewrite the digests"
    changed = [
        text_id for text_id, text in texts if mentions_digest(baseline.extract_mentions, text) != golden[text_id]
    ]
    assert not changed, f"{len(changed)} texts have other mentions than before, e.g. {changed[:10]}"


# The two clause regexes whose leading \b was factored out for speed, as they were written before.
_UNCERTAIN_BEFORE = re.compile(
    r"\?|\bquery\b|\bqueried\b|\bpossibl[ey]\b|\bprobabl[ey]\b|\blikely\b|\bsuspicious\b|\bsuspect\w*|"
    r"\bsuggest\w*|\bmay\b|\bmight\b|\bcould\b|\buncertaincue\b|\bdifferential\b|\bconsider\w*|\bversus\b|"
    r"\bvs\.?\b|\bfavou?r\w*\b|\bquestion\w*|\bequivocal\b|\bindeterminate\b|\buncertain\b|\bpossibility\b|"
    r"\bconcern\w*\b|\bworrisome\b|\bcannot\b|\bpresumed\b|\bperhaps\b",
)
_CLAUSE_BREAK_BEFORE = re.compile(
    r";|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bwhereas\b|\bwhile\b|\bwhich\b|\bapart\s+from\b|"
    r"\bexcept\b|\baside\s+from\b|\bthere\s+(?:is|are)\b|\botherwise\b|\bnoting\b|\bnoted\b",
)
_CLAUSE_WORDS = [
    "?", "query", "queried", "possible", "probably", "likely", "suspicious", "suspected", "suggests", "may", "might",
    "could", "uncertaincue", "differential", "considered", "versus", "vs", "vs.", "favour", "favored", "questionable",
    "equivocal", "indeterminate", "uncertain", "possibility", "concerning", "worrisome", "cannot", "presumed",
    "perhaps", ";", "but", "however", "although", "though", "whereas", "while", "which", "apart from", "except",
    "aside from", "there is", "there are", "otherwise", "noting", "noted", "butter", "thereis", "mayor", "infarct",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_CLAUSE_WORDS), max_size=12), st.lists(st.sampled_from(["", " ", "  ", "-", ".", "x"]),
                                                                         min_size=13, max_size=13), st.integers(0, 80))
def test_factored_regexes_match_as_before(words: list[str], glue: list[str], cut: int) -> None:
    text = "".join(g + w for g, w in zip(glue, [*words, ""]))
    for before, now in ((_UNCERTAIN_BEFORE, baseline._UNCERTAIN), (_CLAUSE_BREAK_BEFORE, baseline._CLAUSE_BREAK)):
        assert [m.span() for m in before.finditer(text)] == [m.span() for m in now.finditer(text)]
        assert [m.span() for m in before.finditer(text, 0, cut)] == [m.span() for m in now.finditer(text, 0, cut)]
        assert [m.span() for m in before.finditer(text, cut)] == [m.span() for m in now.finditer(text, cut)]


def _write() -> None:
    digests = {text_id: mentions_digest(baseline.extract_mentions, text) for text_id, text in golden_texts()}
    GOLDEN.write_text(json.dumps({"version": 1, "digests": digests}, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(digests)} digests to {GOLDEN}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="rewrite the baseline labeller's golden digests")
    parser.add_argument("--write", action="store_true", required=True)
    parser.parse_args()
    _write()
