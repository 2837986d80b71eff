"""Label-preserving text augmentation for training: layout, punctuation and spelling noise.

The encoder's tokenizer is uncased and treats all whitespace alike, so case and line breaks need no
augmentation; what varies between radiologists and hospitals and the tokenizer does see is section
order and headings, punctuation, list markers and typing errors. Nothing here adds, removes or
negates a finding, so a report's labels stay true.
"""

from __future__ import annotations

import random
import re

# A heading at the start of a line: "Findings:", "CONCLUSION -", "Clinical details:" ...
_HEADING = re.compile(r"^[ \t]*([A-Za-z][A-Za-z /&]{2,40}?)[ \t]*[:\-][ \t]*", re.MULTILINE)
_HEADING_SYNONYMS: dict[str, tuple[str, ...]] = {
    "conclusion": ("Conclusion", "Impression", "Summary", "Opinion", "Comment", "IMPRESSION"),
    "impression": ("Conclusion", "Impression", "Summary", "Opinion"),
    "summary": ("Conclusion", "Impression", "Summary"),
    "opinion": ("Conclusion", "Impression", "Opinion"),
    "findings": ("Findings", "Report", "FINDINGS", "Description"),
    "report": ("Findings", "Report"),
    "clinical details": ("Clinical details", "Clinical history", "History", "Indication", "Clinical information"),
    "clinical history": ("Clinical details", "Clinical history", "History", "Indication"),
    "history": ("Clinical details", "History", "Indication"),
    "indication": ("Clinical details", "Indication", "Reason for study"),
    "technique": ("Technique", "Sequences", "Protocol", "Method"),
    "comparison": ("Comparison", "Prior studies", "Compared with"),
}
_WORD = re.compile(r"[A-Za-z]{5,}")
# Words whose corruption could change what a reader takes the report to say.
_PROTECTED = frozenset(
    {"without", "excluded", "exclude", "negative", "absent", "normal", "unremarkable", "resolved", "previous", "chronic", "acute", "old"}
)


def split_sections(text: str) -> list[str]:
    """The report cut before each line-initial heading (the first part may have no heading)."""
    starts = [m.start() for m in _HEADING.finditer(text)]
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    bounds = [*starts, len(text)]
    return [text[bounds[i] : bounds[i + 1]].strip() for i in range(len(starts)) if text[bounds[i] : bounds[i + 1]].strip()]


def shuffle_sections(text: str, rng: random.Random) -> str:
    sections = split_sections(text)
    if len(sections) < 3:
        return text
    # Keep the first part (often the examination title) first; move the others.
    rest = sections[1:]
    rng.shuffle(rest)
    return "\n".join([sections[0], *rest])


def rename_headings(text: str, rng: random.Random) -> str:
    def replace(match: re.Match[str]) -> str:
        choices = _HEADING_SYNONYMS.get(match.group(1).strip().lower())
        if not choices:
            return match.group(0)
        return rng.choice(choices) + rng.choice((": ", ": ", " - ", ":\n"))

    return _HEADING.sub(replace, text)


# Headings that may go without changing meaning; a clinical-question heading must stay, or "Known MS."
# would read as a finding.
_DROPPABLE = frozenset({"conclusion", "impression", "summary", "opinion", "findings", "report", "technique"})


def drop_headings(text: str) -> str:
    return _HEADING.sub(lambda m: "" if m.group(1).strip().lower() in _DROPPABLE else m.group(0), text)


def vary_punctuation(text: str, rng: random.Random) -> str:
    style = rng.choice(("no_stops", "semicolons", "bullets", "dashes", "one_line"))
    if style == "no_stops":
        return re.sub(r"\.(\s)", r"\1", text)
    if style == "semicolons":
        return re.sub(r"\.(\s+)(?=[A-Za-z])", lambda m: rng.choice(("; ", ". ", ", ")), text)
    if style == "bullets":
        return re.sub(r"\.\s+(?=[A-Z])", lambda m: ".\n" + rng.choice(("- ", "* ", "", "\u2022 ")), text)
    if style == "dashes":
        return re.sub(r",\s", lambda m: rng.choice((" - ", ", ", " ")), text)
    return re.sub(r"\s*\n\s*", " ", text)


def add_typos(text: str, rng: random.Random, rate: float = 0.03) -> str:
    def corrupt(match: re.Match[str]) -> str:
        word = match.group(0)
        if word.lower() in _PROTECTED or rng.random() >= rate:
            return word
        i = rng.randrange(1, len(word) - 1)
        kind = rng.randrange(4)
        if kind == 0:  # swap neighbours
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if kind == 1:  # drop a letter
            return word[:i] + word[i + 1 :]
        if kind == 2:  # double a letter
            return word[:i] + word[i] + word[i:]
        return word[:i] + rng.choice("aeioulnrst") + word[i + 1 :]  # wrong letter

    return _WORD.sub(corrupt, text)


def augment(text: str, rng: random.Random, probability: float = 0.5) -> str:
    """A randomly varied copy of `text` (unchanged with probability 1 - `probability`)."""
    if rng.random() >= probability:
        return text
    if rng.random() < 0.3:
        text = shuffle_sections(text, rng)
    choice = rng.random()
    if choice < 0.3:
        text = rename_headings(text, rng)
    elif choice < 0.4:
        text = drop_headings(text)
    if rng.random() < 0.5:
        text = vary_punctuation(text, rng)
    if rng.random() < 0.5:
        text = add_typos(text, rng)
    return text
