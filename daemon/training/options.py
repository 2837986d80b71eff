"""Options of `neurolabel train` (no torch here, so `neurolabel --help` stays fast).

The defaults are the CPU recipe: the first encoder layer only, 8,000 generated reports, 20 head-only
epochs then 3 fine-tuning epochs (62 min on this machine's 2 shared cores at nice 19, other work
running). Its model labels 207 reports/s through the bundled Triton on 2 cores but its mean F1 on
the hand-written sets stays below the rule-based baseline, so the shipped model is still the
3-layer one trained on a GPU by bench/gpu/train_gpu.py (MODEL_CARD.md, "Training").
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

from daemon.training.generator import DEFAULT_SEED

DEFAULT_REPORTS = 8000


@dataclass(frozen=True)
class TrainOptions:
    data: Path | None = None  # JSONL with labels; None: generate the synthetic corpus
    reports: int = DEFAULT_REPORTS  # size of the generated corpus
    corpus_seed: int = DEFAULT_SEED
    add_synthetic: int = 0  # generated reports added to `data` (fine-tuning on a hospital's own reports)
    seed: int = 13
    probe_epochs: int = 20  # head-only epochs on cached encoder states before fine-tuning (0: none)
    probe_learning_rate: float = 5e-3
    epochs: int = 3  # fine-tuning epochs of the whole model
    learning_rate: float = 3e-4
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    batch_tokens: int = 4096  # padded tokens per optimisation step
    encoder_layers: int = 1  # the first N of MiniLM-L6's 6 layers (1: fits 136 reports/s on 2 cores)
    max_tokens: int = 512  # window length, [CLS] and [SEP] included
    overlap: int = 64
    dropout: float = 0.1
    augment_probability: float = 0.5
    validation_fraction: float = 0.15
    evaluations_per_epoch: int = 2
    threshold_rule: str = "f1"
    rules_weight: float = 0.5  # served probability = (1 - w) * transformer + w * rule-based labeller
    threads: int = 2
    repository: Path = Path("triton_models")
    model_name: str = "neurolabel_report"
    version: str = "1"
    release: str = ""
    work_dir: Path = Path("var/training")
    from_checkpoint: Path | None = None  # export these torch weights instead of training


_HELP = {
    "data": "labelled reports (JSONL: id, text, labels); default: generate the synthetic corpus",
    "reports": "size of the generated corpus",
    "corpus_seed": "generator seed",
    "add_synthetic": "also train on this many generated reports (with --data: fine-tune on your own reports)",
    "seed": "seed of the split, initialisation, batching and augmentation",
    "probe_epochs": "epochs training only the head on cached encoder states, before fine-tuning everything",
    "epochs": "epochs fine-tuning the whole model (after the head-only epochs)",
    "batch_tokens": "padded tokens per optimisation step",
    "encoder_layers": "use the first N layers of the pretrained encoder",
    "max_tokens": "tokens per window, [CLS] and [SEP] included",
    "overlap": "tokens shared by neighbouring windows of a long report",
    "augment_probability": "share of training reports varied (layout, punctuation, typos) each epoch",
    "threshold_rule": "how each label's threshold is chosen on the validation split: f1 or youden",
    "rules_weight": "weight of the rule-based labeller in the served probability (0: transformer only)",
    "threads": "torch threads",
    "repository": "Triton model repository to write the model into",
    "version": "model version folder",
    "release": "release name stored with the model (default: today's date)",
    "work_dir": "folder for the torch checkpoint (model.pt)",
    "from_checkpoint": "skip training: export this model.pt (same options as when it was trained)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainOptions()
    for item in fields(TrainOptions):
        default = getattr(defaults, item.name)
        flag = "--" + item.name.replace("_", "-")
        kind = {int: int, float: float, str: str}.get(type(default), Path)
        extra = {"choices": ("f1", "youden")} if item.name == "threshold_rule" else {}
        parser.add_argument(
            flag,
            dest=item.name,
            type=kind,
            default=default,
            metavar=item.name.upper(),
            help=f"{_HELP.get(item.name, item.name.replace('_', ' '))} (default: {default})",
            **extra,
        )


def from_arguments(args: argparse.Namespace) -> TrainOptions:
    return TrainOptions(**{item.name: getattr(args, item.name) for item in fields(TrainOptions)})
