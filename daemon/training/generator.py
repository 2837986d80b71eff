"""Synthetic head MRI reports with exact labels, for training the report classifier.

A report is composed from data (``findings.py``, ``phrases.py``): the generator
first decides what is true of the study (which findings are present, which
labels get a hard negative: denied, only asked about, explained away,
resolved), derives the labels from those decisions, and only then writes
text for them in one of several report styles. Labels never come from text.

Every report is a pure function of ``(seed, index)``, so a corpus is
reproducible, and report ``i`` is the same whatever ``n`` is asked for.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from daemon.labels import CATEGORY_KEYS, LABEL_KEYS, enforce_abnormal_implication
from daemon.training import phrases as P
from daemon.training.findings import (
    CATEGORY_FINDINGS,
    INCIDENTAL,
    NORMAL_FOR_AGE,
    OTHER_ABNORMAL,
    Finding,
)

DEFAULT_SEED = 20240601
DEFAULT_CORPUS_SIZE = 7000
MIN_WORDS = 15
MAX_WORDS = 400

STYLES: tuple[str, ...] = ("uk_sections", "us_sections", "us_subheadings", "prose", "telegraphic", "brief")
_STYLE_WEIGHTS: tuple[float, ...] = (0.30, 0.22, 0.12, 0.16, 0.12, 0.08)
_TARGET_WORDS: dict[str, tuple[int, int]] = {
    "uk_sections": (45, 260),
    "us_sections": (70, 330),
    "us_subheadings": (120, 390),
    "prose": (35, 260),
    "telegraphic": (15, 80),
    "brief": (15, 70),
}

HARD_NEGATIVE_KINDS: tuple[str, ...] = ("negated", "question", "refuted", "resolved")


@dataclass(frozen=True)
class GeneratedReport:
    id: str
    text: str
    labels: dict[str, int]
    style: str
    findings: tuple[str, ...]
    hard_negatives: tuple[tuple[str, str], ...]  # (label, kind)

    def to_record(self) -> dict[str, object]:
        """The ARCHITECTURE.md JSONL shape."""
        return {"id": self.id, "text": self.text, "labels": dict(self.labels)}


# --- slots ---------------------------------------------------------------------------------------


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _size_mm(rng: random.Random, low: int, high: int) -> str:
    value = rng.randint(low, high)
    form = rng.random()
    if form < 0.55:
        return f"{value} mm"
    if form < 0.75:
        return f"{value}mm"
    if value >= 10:
        return f"{value / 10:.1f} cm"
    return f"{value} mm"


def _dims(rng: random.Random) -> str:
    a = rng.randint(15, 65)
    b = max(5, a - rng.randint(0, 15))
    if rng.random() < 0.3:
        c = max(5, b - rng.randint(0, 10))
        return f"{a} x {b} x {c} mm"
    if rng.random() < 0.3:
        return f"{a / 10:.1f} x {b / 10:.1f} cm"
    return f"{a} x {b} mm"


def _date(rng: random.Random, slots: Slots) -> str:
    """A date of the prior study; month and year slots, if still unset, agree with it."""
    day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(2012, 2024)
    slots.setdefault("month", P.MONTHS[month - 1])
    slots.setdefault("year", str(year))
    form = rng.randrange(4)
    if form == 0:
        return f"{day:02d}/{month:02d}/{year}"
    if form == 1:
        return f"{year}-{month:02d}-{day:02d}"
    if form == 2:
        return f"{day} {P.MONTHS[month - 1]} {year}"
    return f"{day:02d}.{month:02d}.{year}"


Sampler = Callable[[random.Random, "Slots"], str]

_SAMPLERS: dict[str, Sampler] = {
    "side": lambda r, s: r.choice(("left", "right")),
    "oside": lambda r, s: "right" if s["side"] == "left" else "left",
    "lobe": lambda r, s: r.choice(("frontal", "parietal", "temporal", "occipital", "frontal", "parietal")),
    "deep": lambda r, s: r.choice((
        "basal ganglia", "thalamus", "internal capsule", "corona radiata", "centrum semiovale",
        "lentiform nucleus", "caudate head", "external capsule", "posterior limb of the internal capsule",
        "periventricular white matter",
    )),
    "mca_region": lambda r, s: r.choice((
        "insula and frontal operculum", "posterior frontal and parietal lobes", "lateral temporal lobe",
        "corona radiata and lentiform nucleus", "frontal cortex", "parietal cortex and subcortical white matter",
        "insular cortex", "precentral gyrus", "temporoparietal region",
    )),
    "size_small": lambda r, s: _size_mm(r, 2, 9),
    "size": lambda r, s: _size_mm(r, 8, 35),
    "dims": lambda r, s: _dims(r),
    "few": lambda r, s: r.choice(("two", "three", "several", "multiple", "numerous", "a few", "four", "5", "six")),
    "mta": lambda r, s: str(r.randint(2, 4)),
    "fazekas": lambda r, s: "2",
    "evans": lambda r, s: f"0.{r.randint(31, 42)}",
    "tonsil": lambda r, s: str(r.randint(6, 14)),
    "tonsil_normal": lambda r, s: str(r.randint(1, 4)),
    "shift": lambda r, s: r.choice((
        f"{r.randint(2, 12)} mm of midline shift to the {s['oside']}",
        "effacement of the adjacent sulci",
        "mild local mass effect",
        f"subfalcine herniation and {r.randint(3, 11)} mm of midline shift",
        f"effacement of the {s['side']} lateral ventricle",
    )),
    "meningioma_loc": lambda r, s: r.choice((
        f"over the {s['side']} frontal convexity", f"along the {s['side']} sphenoid wing", "at the planum sphenoidale",
        "along the falx", f"in the {s['side']} cerebellopontine angle", "at the tuberculum sellae",
        f"along the {s['side']} tentorium", "in the olfactory groove", f"over the {s['side']} parietal convexity",
        "at the foramen magnum",
    )),
    "aneurysm_loc": lambda r, s: r.choice((
        "anterior communicating artery", f"{s['side']} MCA bifurcation",
        f"{s['side']} posterior communicating artery origin", "basilar tip", f"{s['side']} ICA terminus",
        f"{s['side']} paraophthalmic ICA", f"{s['side']} pericallosal artery",
        f"{s['side']} superior cerebellar artery origin", f"{s['side']} cavernous ICA", "ACom",
    )),
    "vessel": lambda r, s: r.choice((
        "M1 segment of the MCA", "internal carotid artery", "vertebral artery", "P2 segment of the PCA",
        "supraclinoid ICA", "middle cerebral artery", "ICA",
    )),
    "dissect_vessel": lambda r, s: r.choice((
        "internal carotid artery", "vertebral artery", "cervical ICA", "V3 segment of the vertebral artery", "ICA",
    )),
    "venous_sinus": lambda r, s: r.choice((
        "superior sagittal sinus", f"{s['side']} transverse sinus", f"{s['side']} transverse and sigmoid sinuses",
        "straight sinus", f"{s['side']} sigmoid sinus and jugular bulb",
    )),
    "date": lambda r, s: _date(r, s),
    "month": lambda r, s: r.choice(P.MONTHS),
    "year": lambda r, s: str(r.randint(2012, 2024)),
    "name": lambda r, s: f"{r.choice('ABCDEFGHJKLMNPRST')}. {r.choice(P.SURNAMES)}",
    "prior": lambda r, s: r.choice(P.PRIOR_REFERENCES).format_map(s),
}


class Slots(dict[str, str]):
    """Template fields sampled on first use and then fixed, so related sentences agree."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self._rng = rng

    def __missing__(self, key: str) -> str:
        if key in _SAMPLERS:
            value = _SAMPLERS[key](self._rng, self)
        elif key[:1].isupper() and key.lower() in _SAMPLERS:
            value = _cap(self[key.lower()])
        else:
            raise KeyError(key)
        self[key] = value
        return value


# --- what a statement is about, so the report never contradicts itself ----------------------

_CONCEPT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "dwi": ("diffusion", "dwi", "adc"),
    "blood": ("haemorrhag", "bleed", "blood", "haematoma", "haemosiderin", "microhaem", "susceptibility", "swi",
              "blooming"),
    "mass_effect": ("mass effect", "midline shift", "effacement", "herniation"),
    "enhancement": ("enhanc",),
    "ventricles": ("ventric", "hydroceph"),
    "white_matter": ("white matter", "leuko", "leuco", "microangiop", "small vessel"),
    "extra_axial": ("extra-axial", "subdural", "extradural", "collection", "meningeal", "cistern"),
    "vascular": ("flow void", "aneurysm", "circle of willis", "venous sinus", "dural venous", "mr angiogram",
                 "venogram", "stenosis", "dissection", "vascular malformation", "avm", "cavernoma", "artery",
                 "arterial", "mra", "tof", "transverse sinus"),
    "sella": ("pituitary", "sella", "chiasm"),
    "hippocampi": ("hippocamp", "mesial temporal", "mta"),
    "posterior_fossa": ("cerebell", "posterior fossa", "brainstem", "tonsil", "fourth ventricle", "craniocervical",
                        "pons", "pontine"),
    "iam": ("auditory", "cerebellopontine", "cpa", "seventh", "inner ear", "vestibular"),
    "sinuses": ("paranasal", "mastoid", "maxillary", "ethmoid"),
    "orbits": ("orbit", "globe", "optic nerve"),
    "skull": ("calvari", "skull", "marrow", "scalp"),
    "volume": ("volume", "atroph", "sulci", "involution"),
}


def concepts_of(text: str) -> frozenset[str]:
    """Anatomical and imaging concepts a sentence talks about (keyword match)."""
    lowered = text.lower()
    return frozenset(
        concept for concept, words in _CONCEPT_KEYWORDS.items() if any(word in lowered for word in words)
    )


# --- decisions -----------------------------------------------------------------------------------


@dataclass
class _Present:
    finding: Finding
    slots: Slots
    description: str
    dx: str
    hedged: bool
    course: str | None
    concepts: frozenset[str]


@dataclass
class _Plan:
    age: int
    sex: str
    style: str
    us: bool
    prior: bool
    present: list[_Present] = field(default_factory=list)
    benign: list[_Present] = field(default_factory=list)
    negatives: list[tuple[str, str]] = field(default_factory=list)  # (label, kind)
    questions: list[str] = field(default_factory=list)
    lead: list[tuple[str, str]] = field(default_factory=list)  # (region, sentence): the abnormal findings
    background: list[tuple[str, str]] = field(default_factory=list)  # benign, negatives, normal statements
    conclusion: list[str] = field(default_factory=list)
    explained: set[str] = field(default_factory=set)  # concepts of findings raised and explained away
    prior_slots: dict[str, str] = field(default_factory=dict)  # one prior study: the same date everywhere

    def sentences(self) -> list[tuple[str, str]]:
        return self.lead + self.background

    def asserted(self) -> frozenset[str]:
        concepts: set[str] = set(self.explained)
        for item in (*self.present, *self.benign):
            concepts |= item.concepts
        return frozenset(concepts)


_EXCLUSIVE: tuple[frozenset[str], ...] = (
    frozenset({"residual_tumour", "post_surgical"}),
    frozenset({"wmh_moderate", "wmh_severe", "wmh_mild", "svd_not_demyelination", "cadasil_pattern"}),
    frozenset({"ms_stable", "ms_active"}),
    frozenset({"ms_stable", "cis_single_lesion", "adem", "nmosd", "mogad"}),
    frozenset({"hydrocephalus", "nph"}),
    frozenset({"acute_subdural", "chronic_subdural"}),
)


def _compatible(name: str, chosen: Sequence[str]) -> bool:
    if name in chosen:
        return False
    return not any(name in group and group.intersection(chosen) for group in _EXCLUSIVE)


def _category_weights(age: int) -> dict[str, float]:
    weights = {key: 1.0 for key in CATEGORY_KEYS}
    weights["other"] = 1.3
    if age >= 65:
        weights.update(small_vessel_disease=1.9, atrophy=1.6, encephalomalacia=1.3, inflammation=0.35)
    elif age < 45:
        weights.update(small_vessel_disease=0.35, atrophy=0.3, inflammation=1.9)
    return weights


def _slots(rng: random.Random, plan: _Plan) -> Slots:
    slots = Slots(rng)
    slots.update(plan.prior_slots)
    return slots


def _realise(rng: random.Random, finding: Finding, plan: _Plan) -> _Present:
    slots = _slots(rng, plan)
    description = rng.choice(finding.describe).format_map(slots)
    dx = rng.choice(finding.dx).format_map(slots)
    course = None
    if plan.prior and finding.course and rng.random() < 0.6:
        course = rng.choice(finding.course)
    concepts = concepts_of(description) | {finding.region} | frozenset(finding.extra_concepts)
    return _Present(finding, slots, description, dx, hedged=False, course=course, concepts=concepts)


def _plan_report(rng: random.Random) -> _Plan:
    age = int(min(95, max(2, rng.gauss(56, 19))))
    style = rng.choices(STYLES, weights=_STYLE_WEIGHTS)[0]
    us = rng.random() < (0.75 if style.startswith("us") else 0.2)
    plan = _Plan(age=age, sex=rng.choice(("F", "M")), style=style, us=us, prior=rng.random() < 0.35)
    prior = Slots(rng)
    plan.prior_slots = {"date": prior["date"], "month": prior["month"], "year": prior["year"], "prior": prior["prior"]}

    # 1. Abnormal findings.
    if rng.random() >= 0.33:
        count = rng.choices((1, 2, 3, 4), weights=(0.40, 0.34, 0.19, 0.07))[0]
        weights = _category_weights(age)
        names: list[str] = []
        attempts = 0
        while len(plan.present) < count and attempts < 20:
            attempts += 1
            category = rng.choices(list(weights), weights=list(weights.values()))[0]
            pool = OTHER_ABNORMAL if category == "other" else CATEGORY_FINDINGS[category]
            finding = rng.choice(pool)
            if not _compatible(finding.name, names):
                continue
            names.append(finding.name)
            item = _realise(rng, finding, plan)
            item.hedged = rng.random() < 0.18
            plan.present.append(item)

    # 2. Benign findings: incidental and normal for age, never contradicting what is present.
    benign_pool: list[Finding] = list(INCIDENTAL)
    if age >= 50:
        benign_pool += list(NORMAL_FOR_AGE) * 3
    for _ in range(rng.choices((0, 1, 2, 3), weights=(0.45, 0.33, 0.16, 0.06))[0]):
        finding = rng.choice(benign_pool)
        if finding.name in {b.finding.name for b in plan.benign}:
            continue
        item = _realise(rng, finding, plan)
        if item.concepts & plan.asserted():
            continue
        plan.benign.append(item)

    # 3. Hard negatives for labels that are 0.
    labels = _labels_of(plan)
    for key in LABEL_KEYS:
        if labels[key] or rng.random() >= 0.38:
            continue
        kinds = ["negated", "negated", "negated", "question", "question", "refuted"]
        if plan.prior and key in P.RESOLVED:
            kinds.append("resolved")
        plan.negatives.append((key, rng.choice(kinds)))

    # 4. Questions that the report confirms (positive categories).
    for item in plan.present:
        for category in item.finding.cats or ("abnormal",):
            if rng.random() < 0.25 and len(plan.questions) < 2:
                plan.questions.append(_question(rng, category))
    return plan


def _question(rng: random.Random, key: str) -> str:
    """A clinical question or history line that names a label (unconfirmed by itself)."""
    roll = rng.random()
    if roll < 0.4:
        return rng.choice(P.QUESTIONS[key])
    if roll < 0.55:
        term = rng.choice(P.KNOWN_TERMS[key])
        return rng.choice(P.KNOWN_TEMPLATES).format(t=term)
    term = rng.choice(P.QUESTION_TERMS[key])
    return rng.choice(P.QUESTION_TEMPLATES).format(t=term, T=_cap(term))


def _labels_of(plan: _Plan) -> dict[str, int]:
    labels = {key: 0 for key in LABEL_KEYS}
    for item in plan.present:
        if item.finding.abnormal:
            labels["abnormal"] = 1
        for category in item.finding.cats:
            labels[category] = 1
    return enforce_abnormal_implication(labels)


# --- writing -------------------------------------------------------------------------------------


def _fmt(template: str, slots: Slots, dx: str = "") -> str:
    slots["dx"] = dx
    slots["Dx"] = _cap(dx)
    return _cap(template.format_map(slots))


def _finding_sentence(rng: random.Random, item: _Present, with_dx: bool) -> str:
    desc, dx, slots = item.description, item.dx, item.slots
    if item.hedged:
        if rng.random() < 0.5:
            return desc[:-1] + _fmt(rng.choice(P.INLINE_HEDGES), slots, dx)
        return desc + " " + _fmt(rng.choice(P.HEDGED_LINKERS + P.MORE_HEDGES), slots, dx)
    if not with_dx and rng.random() < 0.75:
        return desc
    roll = rng.random()
    if roll < 0.35:
        return desc[:-1] + _fmt(rng.choice(P.INLINE_LINKERS), slots, dx)
    if roll < 0.75:
        return desc + " " + _fmt(rng.choice(P.LINKERS), slots, dx)
    if roll < 0.9:
        return _fmt(rng.choice(P.DX_SENTENCES), slots, dx)
    return desc


def _course_sentence(rng: random.Random, item: _Present) -> str:
    assert item.course is not None
    return _fmt(rng.choice(P.COURSE_PHRASES[item.course]), item.slots)


def _conclusion_item(rng: random.Random, item: _Present) -> str:
    slots, dx = item.slots, item.dx
    if item.hedged:
        return _fmt(rng.choice(P.CONCLUSION_HEDGES + P.MORE_HEDGES), slots, dx)
    if item.course and rng.random() < 0.6:
        return _cap(f"{rng.choice(P.COURSE_ADJECTIVES[item.course])} {dx}.")
    text = _cap(dx) + "."
    if item.course and rng.random() < 0.5:
        text += " " + _course_sentence(rng, item)
    return text


def _negative_sentence(rng: random.Random, plan: _Plan, key: str, kind: str) -> tuple[str, str] | None:
    """A sentence for a hard negative (region, text), or None when it would contradict the report."""
    slots = _slots(rng, plan)
    if kind == "refuted":
        text = _cap(rng.choice(P.REFUTED[key]).format_map(slots))
    elif kind == "resolved":
        text = _cap(rng.choice(P.RESOLVED[key]).format_map(slots))
    elif rng.random() < 0.5:
        text = rng.choice(P.NEGATIONS[key])
    else:
        text = _negation(rng, rng.choice(P.NEGATABLE_TERMS[key]))
    if concepts_of(text) & plan.asserted():
        return None
    if kind in ("refuted", "resolved"):
        plan.explained |= concepts_of(text)
    region = "general"
    concepts = concepts_of(text)
    for candidate in P.REGION_ORDER:
        if candidate in concepts:
            region = candidate
            break
    return region, text


def _negation(rng: random.Random, term: str) -> str:
    return _cap(rng.choice(P.NEGATION_TEMPLATES).format(t=term, T=_cap(term)))


def _list_negation(rng: random.Random, plan: _Plan) -> tuple[str, list[str]] | None:
    """"No {a}, {b} or {c}." over labels that are 0 (and things outside the categories); None if none fit."""
    labels = _labels_of(plan)
    asserted = plan.asserted()
    keys = [key for key in CATEGORY_KEYS if not labels[key]] + ["abnormal", "abnormal"]
    rng.shuffle(keys)
    chosen: list[tuple[str, str]] = []
    for key in keys:
        term = rng.choice(P.NEGATABLE_TERMS[key])
        if concepts_of(term) & asserted or any(term == t for _, t in chosen):
            continue
        chosen.append((key, term))
        if len(chosen) == 3:
            break
    if len(chosen) < 2:
        return None
    template = rng.choice(P.LIST_NEGATION_TEMPLATES)
    a, b = chosen[0][1], chosen[1][1]
    c = chosen[2][1] if len(chosen) > 2 else chosen[1][1]
    if "{c}" not in template:
        chosen = chosen[:2]
    text = _cap(template.format(a=a, b=b, c=c, A=_cap(a)))
    return text, [key for key, _ in chosen if key != "abnormal"]


def _write_findings(rng: random.Random, plan: _Plan, has_conclusion: bool, describe_only: bool = False) -> None:
    for item in plan.present:
        if describe_only and not item.hedged:
            sentence = item.description
        else:
            sentence = _finding_sentence(rng, item, with_dx=not has_conclusion or rng.random() < 0.4)
        if item.course and rng.random() < 0.7:
            sentence += " " + _course_sentence(rng, item)
        plan.lead.append((item.finding.region, sentence))
    for item in plan.benign:
        plan.background.append((item.finding.region, item.description))
    for key, kind in plan.negatives:
        if kind == "question" and rng.random() < 0.45:
            continue  # asked about and simply not mentioned again
        sentence = _negative_sentence(rng, plan, key, kind)
        if sentence and sentence[1] not in {text for _, text in plan.background}:
            plan.background.append(sentence)
    if rng.random() < 0.3:
        listed = _list_negation(rng, plan)
        if listed:
            text, keys = listed
            plan.background.append(("general", text))
            plan.negatives.extend((key, "negated") for key in keys if (key, "negated") not in plan.negatives)
    if rng.random() < 0.15:
        plan.background.append(("general", rng.choice(P.QUALITY_STATEMENTS)))
    if plan.age < 4 and rng.random() < 0.7:
        plan.background.append(("white_matter", rng.choice(P.PAEDIATRIC_STATEMENTS)))
    if rng.random() < 0.3:
        rng.shuffle(plan.lead)


def _write_conclusion(rng: random.Random, plan: _Plan) -> None:
    items = [_conclusion_item(rng, item) for item in plan.present]
    abnormal = any(item.finding.abnormal for item in plan.present)
    acute = any(item.finding.acute for item in plan.present)
    if not abnormal:
        if plan.benign and any(b.finding in NORMAL_FOR_AGE for b in plan.benign) and rng.random() < 0.6:
            items.append(rng.choice(P.NORMAL_FOR_AGE_CONCLUSIONS))
        else:
            items.append(rng.choice(P.NORMAL_CONCLUSIONS))
    elif not acute and rng.random() < 0.3:
        items.insert(0 if rng.random() < 0.5 else len(items), rng.choice(P.NO_ACUTE_CONCLUSIONS))
    elif rng.random() < 0.2:
        items.append(rng.choice(P.OTHERWISE_NORMAL))
    for key, kind in plan.negatives:
        if kind in ("question", "negated") and rng.random() < 0.45:
            text = rng.choice(P.CONCLUSION_NEGATIONS[key])
            if not concepts_of(text) & plan.asserted():
                items.append(text)
    for item in plan.benign:
        if rng.random() < 0.2:
            items.append(_cap(f"incidental {item.dx}.") if not item.dx.startswith("incidental") else _cap(item.dx) + ".")
    if len(items) >= 2 and rng.random() < 0.15:
        # Two findings in one sentence: "X and Y." / "X; Y."
        first, second = items[0].rstrip("."), items[1].rstrip(".")
        joiner = rng.choice((" and ", "; ", ", with ", ", and "))
        joined = first + joiner + second[:1].lower() + second[1:] + "."
        items = [joined] + items[2:]
    plan.conclusion = items


def _clinical_line(rng: random.Random, plan: _Plan) -> str:
    parts: list[str] = []
    questions = list(plan.questions)
    for key, kind in plan.negatives:
        if kind == "question":
            questions.append(_question(rng, key))
    slots = Slots(rng)
    questions = [_cap(q.format_map(slots)) for q in questions]
    if not questions or rng.random() < 0.4:
        parts.append(rng.choice(P.GENERIC_REASONS))
    parts.extend(questions)
    rng.shuffle(parts)
    roll = rng.random()
    if roll < 0.35:
        sex = {"F": ("female", "woman", "F", "lady"), "M": ("male", "man", "M", "gentleman")}[plan.sex]
        word = rng.choice(sex)
        if len(word) == 1:
            prefix = f"{plan.age}{word}"
        else:
            prefix = f"{plan.age}-year-old {word}" if rng.random() < 0.6 else f"{plan.age}yo {word}"
        parts.insert(0, prefix)
    text = rng.choice((". ", ", ", ". ", " - ")).join(parts)
    if rng.random() < 0.3:
        text += ". " + rng.choice(P.HISTORY_EXTRAS)
    return text.rstrip(".") + "."


def _add_fillers(rng: random.Random, plan: _Plan, target_words: int, current_words: Callable[[], int]) -> None:
    regions = list(P.NORMAL_STATEMENTS)
    rng.shuffle(regions)
    # A long report says two things about the main regions.
    regions += [r for r in regions if r in ("parenchyma", "white_matter", "ventricles", "extra_axial",
                                            "posterior_fossa", "vascular", "skull")]
    used: set[str] = set()
    asserted = plan.asserted()
    for region in regions:
        if current_words() >= target_words:
            break
        if region in asserted:
            continue
        used |= {text for _, text in plan.background}
        options = [s for s in P.NORMAL_STATEMENTS[region] if not concepts_of(s) & asserted and s not in used]
        if not options:
            continue
        sentence = rng.choice(options)
        used.add(sentence)
        plan.background.append((region, sentence))
    # A conventional anatomical order, with some noise; sometimes none at all.
    order = {region: i for i, region in enumerate(P.REGION_ORDER)}
    if rng.random() < 0.7:
        plan.background.sort(key=lambda rs: order.get(rs[0], len(order)) + rng.random() * 3)
    else:
        rng.shuffle(plan.background)


# --- styles --------------------------------------------------------------------------------------


def _heading(rng: random.Random, kind: str, upper: bool) -> str:
    name = rng.choice(P.HEADINGS[kind])
    return name.upper() if upper else name


def _numbered(rng: random.Random, items: Sequence[str]) -> str:
    if len(items) == 1 and rng.random() < 0.7:
        return items[0]
    form = rng.randrange(4)
    if form == 0:
        return "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))
    if form == 1:
        return "\n".join(f"{i}) {t}" for i, t in enumerate(items, 1))
    if form == 2:
        return "\n".join(f"- {t}" for t in items)
    return " ".join(items)


def _render_sections(rng: random.Random, plan: _Plan, clinical: str, us_style: bool) -> str:
    upper = rng.random() < (0.7 if us_style else 0.35)
    inline = rng.random() < 0.5
    blocks: list[str] = []

    def block(kind: str, body: str) -> None:
        heading = _heading(rng, kind, upper)
        blocks.append(f"{heading}: {body}" if inline and "\n" not in body else f"{heading}:\n{body}")

    if rng.random() < (0.8 if us_style else 0.4):
        blocks.append(rng.choice(P.TITLES))
    block("clinical", clinical)
    if rng.random() < (0.85 if us_style else 0.5):
        block("technique", rng.choice(P.TECHNIQUES))
    if plan.prior:
        block("comparison", rng.choice(P.COMPARISON_PRIOR).format_map(_slots(rng, plan)))
    elif rng.random() < (0.7 if us_style else 0.25):
        block("comparison", rng.choice(P.COMPARISON_NONE))
    sentences = [s for _, s in plan.sentences()]
    if rng.random() < 0.1:
        sentences = [f"- {s}" for s in sentences]
        paragraph_break = "\n"
    else:
        paragraph_break = "\n" if rng.random() < 0.4 else " "
    conclusion = _numbered(rng, plan.conclusion) if us_style or rng.random() < 0.5 else " ".join(plan.conclusion)
    if rng.random() < 0.1:  # impression first, then the findings
        block("conclusion", conclusion)
        block("findings", paragraph_break.join(sentences))
    else:
        block("findings", paragraph_break.join(sentences))
        block("conclusion", conclusion)
    _tail(rng, plan, blocks)
    return "\n\n".join(blocks) if rng.random() < 0.6 else "\n".join(blocks)


def _render_subheadings(rng: random.Random, plan: _Plan, clinical: str) -> str:
    blocks = [rng.choice(P.TITLES)] if rng.random() < 0.8 else []
    blocks.append(f"{_heading(rng, 'clinical', True)}: {clinical}")
    blocks.append(f"{_heading(rng, 'technique', True)}: {rng.choice(P.TECHNIQUES)}")
    comparison = (rng.choice(P.COMPARISON_PRIOR).format_map(_slots(rng, plan)) if plan.prior
                  else rng.choice(P.COMPARISON_NONE))
    blocks.append(f"{_heading(rng, 'comparison', True)}: {comparison}")
    grouped: dict[str, list[str]] = {}
    for region, sentence in plan.sentences():
        grouped.setdefault(region, []).append(sentence)
    lines = [f"{_heading(rng, 'findings', True)}:"]
    for region in [r for r in P.REGION_ORDER if r in grouped] + [r for r in grouped if r not in P.REGION_ORDER]:
        label = rng.choice(P.SUBHEADINGS.get(region, ("Other",)))
        lines.append(f"{label}: {' '.join(grouped[region])}")
    blocks.append("\n".join(lines))
    blocks.append(f"{_heading(rng, 'conclusion', True)}:\n" + _numbered(rng, plan.conclusion))
    _tail(rng, plan, blocks)
    return "\n\n".join(blocks)


def _render_prose(rng: random.Random, plan: _Plan, clinical: str) -> str:
    opening = rng.choice((
        f"Clinical details: {clinical}",
        f"Indication: {clinical}",
        f"{clinical}",
        f"MRI of the brain was performed. {clinical}",
    ))
    parts = [opening]
    if plan.prior:
        parts.append("Comparison is made with " + rng.choice(P.COMPARISON_PRIOR).format_map(_slots(rng, plan)).rstrip(".").replace("Compared with the", "the") + ".")
    parts.append(" ".join(s for _, s in plan.sentences()))
    intro = rng.choice(("In summary, ", "Conclusion: ", "Impression: ", "Summary: ", "", "Overall: ", "Opinion: "))
    summary = " ".join(plan.conclusion)
    parts.append(intro + (summary[:1].lower() + summary[1:] if intro.endswith(", ") else summary))
    tail: list[str] = []
    _tail(rng, plan, tail)
    sep = "\n\n" if rng.random() < 0.5 else " "
    return sep.join(parts + tail)


def _telegraphic(text: str) -> str:
    text = re.sub(r"\bThere (?:is|are) (?:an? )?", "", text)
    text = re.sub(r"\s(?:is|are) (?:seen|noted|present|identified)\b", "", text)
    text = re.sub(r"\bThe (\w)", lambda m: m.group(1).upper(), text)
    text = re.sub(r"\bin keeping with\b", "c/w", text)
    return text


def _render_telegraphic(rng: random.Random, plan: _Plan, clinical: str) -> str:
    head = rng.choice(("MRI head.", "MR brain:", "MRI brain -", "MRIH:", ""))
    sentences = [_telegraphic(_cap(s)) for _, s in plan.sentences()]
    body = " ".join(sentences)
    concl = " ".join(_telegraphic(c) for c in plan.conclusion)
    hist = rng.choice(("Hx: ", "Ind: ", "CI: ", "", "?: ")) + clinical
    if plan.prior:
        hist += f" Prior {plan.prior_slots['month']} {plan.prior_slots['year']}."
    return " ".join(x for x in (head, hist, body, rng.choice(("Concl: ", "Imp: ", "=> ", "Summary: ", "")) + concl) if x)


def _render_brief(rng: random.Random, plan: _Plan, clinical: str) -> str:
    concl = " ".join(plan.conclusion)
    body = " ".join(s for _, s in plan.sentences())
    return f"{rng.choice(P.TITLES)}\n{clinical}\n{body}\n{rng.choice(('Conclusion', 'Impression', 'Opinion'))}: {concl}"


def _tail(rng: random.Random, plan: _Plan, blocks: list[str]) -> None:
    if plan.present and rng.random() < 0.2:
        cats = [c for item in plan.present for c in item.finding.cats] or ["abnormal"]
        options = P.RECOMMENDATIONS_BY_LABEL[rng.choice(cats)]
        blocks.append(rng.choice(options if rng.random() < 0.8 else P.RECOMMENDATIONS))
    if rng.random() < 0.3:
        blocks.append(rng.choice(P.SIGNOFFS).format_map(Slots(rng)))


def _render(rng: random.Random, plan: _Plan) -> str:
    clinical = _clinical_line(rng, plan)
    if plan.style == "uk_sections":
        return _render_sections(rng, plan, clinical, us_style=False)
    if plan.style == "us_sections":
        return _render_sections(rng, plan, clinical, us_style=True)
    if plan.style == "us_subheadings":
        return _render_subheadings(rng, plan, clinical)
    if plan.style == "prose":
        return _render_prose(rng, plan, clinical)
    if plan.style == "telegraphic":
        return _render_telegraphic(rng, plan, clinical)
    return _render_brief(rng, plan, clinical)


# --- surface variation ---------------------------------------------------------------------------

_US_SPELLING: tuple[tuple[str, str], ...] = (
    ("haem", "hem"), ("Haem", "Hem"), ("aemi", "emi"), ("oedema", "edema"), ("Oedema", "Edema"),
    ("tumour", "tumor"), ("Tumour", "Tumor"), ("grey", "gray"), ("Grey", "Gray"), ("generalis", "generaliz"),
    ("Generalis", "Generaliz"), ("localis", "localiz"), ("recanalis", "recanaliz"), ("pneumatis", "pneumatiz"),
    ("normalis", "normaliz"), ("characteris", "characteriz"), ("isualis", "isualiz"), ("orientated", "oriented"),
    ("centre", "center"), ("ehaviour", "ehavior"), ("calibre", "caliber"), ("avour", "avor"), ("leuco", "leuko"),
    ("paediatric", "pediatric"), ("anaesthe", "anesthe"), ("foetal", "fetal"), ("aetiolog", "etiolog"),
    ("extradural", "epidural"), ("fibre", "fiber"), ("ageing", "aging"), ("dilatation", "dilation"),
    ("Favour", "Favor"),
)

_ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    ("white matter hyperintensities", "WMH"), ("middle cerebral artery", "MCA"), ("multiple sclerosis", "MS"),
    ("small vessel disease", "SVD"), ("diffusion-weighted imaging", "DWI"), ("arteriovenous malformation", "AVM"),
    ("developmental venous anomaly", "DVA"), ("internal carotid artery", "ICA"), ("cerebellopontine angle", "CPA"),
    ("subarachnoid haemorrhage", "SAH"), ("posterior cerebral artery", "PCA"), ("anterior cerebral artery", "ACA"),
    ("cerebrospinal fluid", "CSF"), ("magnetic resonance", "MR"), ("bilateral", "bilat"),
    ("approximately", "approx"),
)
_TELEGRAPHIC_ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    ("consistent with", "c/w"), ("compared with", "cf."), ("with", "w/"), ("left", "L"), ("right", "R"),
    ("Left", "L"), ("Right", "R"), ("bilateral", "b/l"), ("white matter", "WM"), ("grey matter", "GM"),
    ("no evidence of", "no evid. of"), ("history", "hx"), ("lesions", "lesions"), ("hyperintense", "hyperint."),
)

_EXPANSIONS: tuple[tuple[str, str], ...] = (
    ("SWI", "susceptibility-weighted imaging"), ("DWI", "diffusion-weighted imaging"),
    ("ADC", "apparent diffusion coefficient"), ("MCA", "middle cerebral artery"), ("PCA", "posterior cerebral artery"),
    ("TOF", "time-of-flight"), ("MRA", "MR angiography"), ("CPA", "cerebellopontine angle"),
    ("IAM", "internal auditory meatus"),
)

_PROTECTED = frozenset({
    "no", "not", "without", "negative", "excluded", "exclude", "cannot", "absent", "none", "normal", "resolved",
    "unremarkable", "nil", "free", "never", "neither", "nor", "likely", "possible", "query", "left", "right",
})


def _replace_words(text: str, pairs: Sequence[tuple[str, str]], rng: random.Random, p: float) -> str:
    for old, new in pairs:
        if old in text and rng.random() < p:
            text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return text


def _typo(rng: random.Random, word: str) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    return word[:i] + " " + word[i:]


def _add_typos(rng: random.Random, text: str, count: int) -> str:
    tokens = re.split(r"(\s+)", text)
    candidates = [i for i, t in enumerate(tokens) if t.isalpha() and len(t) >= 5 and t.lower() not in _PROTECTED]
    for i in rng.sample(candidates, min(count, len(candidates))):
        tokens[i] = _typo(rng, tokens[i])
    return "".join(tokens)


def _paraphrase(rng: random.Random, text: str, p: float) -> str:
    for pattern, alternatives in P.SYNONYMS:
        def swap(match: re.Match[str]) -> str:
            if rng.random() >= p:
                return match.group(0)
            choice = rng.choice(alternatives)
            return _cap(choice) if match.group(0)[:1].isupper() else choice
        text = re.sub(pattern, swap, text, flags=re.IGNORECASE)
    return text


def _surface(rng: random.Random, plan: _Plan, text: str) -> str:
    if rng.random() < 0.7:
        text = _paraphrase(rng, text, 0.35)
    if plan.us:
        for old, new in _US_SPELLING:
            text = text.replace(old, new)
    telegraphic = plan.style == "telegraphic"
    text = _replace_words(text, _ABBREVIATIONS, rng, 0.6 if telegraphic else 0.25)
    if telegraphic:
        text = _replace_words(text, _TELEGRAPHIC_ABBREVIATIONS, rng, 0.35)
    text = _replace_words(text, _EXPANSIONS, rng, 0.08)
    text = re.sub(r"(^|[.!?:]\s+|\n)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    if rng.random() < 0.25:
        text = _add_typos(rng, text, rng.choice((1, 1, 2, 3)))
    if rng.random() < 0.03:
        text = text.upper()
    elif rng.random() < 0.03:
        text = text.lower()
    if rng.random() < 0.05:
        text = re.sub(r"\.\s+(?=[A-Z])", ".", text, count=rng.randint(1, 3))
    return text.strip()


def _word_count(text: str) -> int:
    return len(text.split())


# --- entry points --------------------------------------------------------------------------------


def generate_report(seed: int, index: int) -> GeneratedReport:
    """The report number ``index`` of the corpus with ``seed``: deterministic."""
    rng = random.Random(f"neurolabel-corpus:{seed}:{index}")
    plan = _plan_report(rng)
    labels = _labels_of(plan)
    has_conclusion = plan.style != "telegraphic" or rng.random() < 0.6
    as_above = bool(plan.present) and has_conclusion and rng.random() < 0.08
    _write_findings(rng, plan, has_conclusion and not as_above, describe_only=as_above)
    _write_conclusion(rng, plan)
    if as_above:
        plan.conclusion = [rng.choice(P.AS_ABOVE)]
    low, high = _TARGET_WORDS[plan.style]
    target = int(rng.triangular(low, high, low + (high - low) * 0.3))
    fixed_words = 12 + sum(_word_count(c) for c in plan.conclusion)
    _add_fillers(rng, plan, target,
                 lambda: fixed_words + sum(_word_count(s) for _, s in plan.sentences()))
    text = _surface(rng, plan, _render(rng, plan))
    while _word_count(text) > MAX_WORDS and plan.background:
        plan.background.pop()
        text = _surface(random.Random(f"{seed}:{index}:trim"), plan, _render(random.Random(f"{seed}:{index}:r"), plan))
    if _word_count(text) < MIN_WORDS:
        text += " " + " ".join(P.NORMAL_STATEMENTS["sinuses"][:1] + P.NORMAL_STATEMENTS["skull"][:1]
                               + P.NORMAL_STATEMENTS["orbits"][:1])
    return GeneratedReport(
        id=f"gen-{seed}-{index:06d}",
        text=text,
        labels=labels,
        style=plan.style,
        findings=tuple(item.finding.name for item in plan.present),
        hard_negatives=tuple(plan.negatives),
    )


def generate_corpus(n: int, seed: int = DEFAULT_SEED, start: int = 0) -> Iterator[GeneratedReport]:
    for index in range(start, start + n):
        yield generate_report(seed, index)


def write_corpus(path: Path, n: int, seed: int = DEFAULT_SEED) -> int:
    """Write ``n`` reports as JSON Lines; returns the number written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for report in generate_corpus(n, seed):
            out.write(json.dumps(report.to_record(), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return n
