"""Fine-tunes the report classifier on a GPU: several recipes in one run, each scored on held-apart data.

    python bench/gpu/train_gpu.py --encoder-dir DIR --out OUT [--dev data/devset/handwritten.jsonl]

Same model as daemon/training (MiniLM encoder, label-wise attention pooling, windows pooled exactly),
same generator and metrics. Each recipe trains on the generated corpus, picks its best epoch by the
loss on a generated validation split, chooses thresholds on that split (max F1), and is then scored on
the hand-written development set (never trained on). The chosen recipe's weights are written in
chunks of < 16 MB (fp32 state dict in safetensors, less the frozen word embeddings), with a JSON of every recipe's figures.
DIR: the pretrained encoder (config.json, model.safetensors, tokenizer.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from daemon.evaluation.metrics import choose_threshold, roc_auc  # noqa: E402
from daemon.inference.metadata import latest_version_dir  # noqa: E402
from daemon.inference.windows import ReportTokenizer, WindowSpec, batch_windows, make_windows  # noqa: E402
from daemon.labels import LABEL_KEYS  # noqa: E402
from daemon.training.augment import augment  # noqa: E402
from daemon.training.generator import DEFAULT_SEED, generate_corpus  # noqa: E402
from daemon.training.model import WindowModel, combine_windows, load_encoder  # noqa: E402


@dataclass(frozen=True)
class Recipe:
    name: str
    layers: int = 3
    reports: int = 20000
    epochs: int = 4
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3
    batch_reports: int = 32
    augment_probability: float = 0.5
    freeze_word_embeddings: bool = True
    dropout: float = 0.1
    seed: int = 13


RECIPES = {
    "l3": Recipe("l3"),
    "l3-long": Recipe("l3-long", epochs=8),
    "l3-noaug": Recipe("l3-noaug", augment_probability=0.0),
    "l3-big": Recipe("l3-big", batch_reports=64, learning_rate=8e-5, epochs=5),
    "l4": Recipe("l4", layers=4),
    "l6": Recipe("l6", layers=6, epochs=3),
    "l3-reg": Recipe("l3-reg", dropout=0.2, augment_probability=0.8, epochs=3, batch_reports=64, learning_rate=8e-5),
    "l4-reg": Recipe("l4-reg", layers=4, dropout=0.2, augment_probability=0.8, epochs=3, batch_reports=64, learning_rate=8e-5),
    "l3-40k": Recipe("l3-40k", reports=40000, epochs=2, batch_reports=64, learning_rate=8e-5),
}


def report_logits(model: WindowModel, tokenizer: ReportTokenizer, ids: list[list[int]], spec: WindowSpec, device) -> torch.Tensor:
    windows = make_windows(ids, spec, tokenizer.special)
    batch = batch_windows(windows, len(ids), tokenizer.special.pad)
    tensors = [torch.from_numpy(a).to(device) for a in (batch.input_ids, batch.attention_mask, batch.pool_mask)]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits, lse = model(*tensors)
    return combine_windows(logits.float(), lse.float(), torch.from_numpy(batch.report_index).to(device), len(ids))


def predict(model: WindowModel, tokenizer: ReportTokenizer, texts: list[str], spec: WindowSpec, device) -> np.ndarray:
    model.eval()
    ids = tokenizer.encode(texts)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    result = np.empty((len(texts), len(LABEL_KEYS)))
    with torch.no_grad():
        for start in range(0, len(order), 128):
            chunk = order[start : start + 128]
            result[chunk] = torch.sigmoid(report_logits(model, tokenizer, [ids[i] for i in chunk], spec, device)).cpu().numpy()
    return result


def scores(labels: np.ndarray, probabilities: np.ndarray, thresholds: dict[str, float]) -> dict:
    per_label = {}
    for j, key in enumerate(LABEL_KEYS):
        y, p = labels[:, j], probabilities[:, j]
        predicted = (p >= thresholds[key]).astype(int)
        tp = int(((predicted == 1) & (y == 1)).sum())
        fp = int(((predicted == 1) & (y == 0)).sum())
        fn = int(((predicted == 0) & (y == 1)).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        per_label[key] = {"auc": roc_auc(y, p), "f1": f1}
    aucs = [v["auc"] for v in per_label.values() if v["auc"] is not None]
    f1s = [v["f1"] for v in per_label.values() if v["f1"] is not None]
    return {"min_auc": min(aucs), "mean_auc": float(np.mean(aucs)), "mean_f1": float(np.mean(f1s)), "per_label": per_label}


def train_recipe(recipe: Recipe, encoder_dir: Path, tokenizer: ReportTokenizer, dev: list[dict], device) -> tuple[dict, dict]:
    started = time.monotonic()
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    spec = WindowSpec(512, 64)
    corpus = list(generate_corpus(recipe.reports, DEFAULT_SEED))
    order = list(range(len(corpus)))
    random.Random(recipe.seed).shuffle(order)
    n_validation = len(corpus) // 10
    validation = [corpus[i] for i in order[:n_validation]]
    train = [corpus[i] for i in order[n_validation:]]
    train_labels = torch.tensor([[r.labels[k] for k in LABEL_KEYS] for r in train], dtype=torch.float32, device=device)
    validation_labels = np.asarray([[r.labels[k] for k in LABEL_KEYS] for r in validation])

    model = WindowModel(load_encoder(encoder_dir, dropout=recipe.dropout, layers=recipe.layers), head_dropout=recipe.dropout).float().to(device)
    if recipe.freeze_word_embeddings:
        model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    encoder_parameters = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder_parameters, "lr": recipe.learning_rate},
            {"params": list(model.head.parameters()), "lr": recipe.head_learning_rate},
        ],
        weight_decay=0.01,
    )
    steps_per_epoch = math.ceil(len(train) / recipe.batch_reports)
    total = steps_per_epoch * recipe.epochs
    warmup = max(1, total // 16)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    dev_labels = np.asarray([[d["labels"][k] for k in LABEL_KEYS] for d in dev])
    best = (math.inf, None, -1)
    history = []
    for epoch in range(recipe.epochs):
        model.train()
        indices = list(range(len(train)))
        rng.shuffle(indices)
        running = 0.0
        for step in range(steps_per_epoch):
            batch = indices[step * recipe.batch_reports : (step + 1) * recipe.batch_reports]
            texts = [augment(train[i].text, rng, recipe.augment_probability) for i in batch]
            logits = report_logits(model, tokenizer, tokenizer.encode(texts), spec, device)
            loss = loss_fn(logits, train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            running += loss.item()
        probabilities = predict(model, tokenizer, [r.text for r in validation], spec, device)
        p = np.clip(probabilities, 1e-7, 1 - 1e-7)
        validation_loss = float(-(validation_labels * np.log(p) + (1 - validation_labels) * np.log(1 - p)).mean())
        epoch_thresholds = {
            key: float(choose_threshold(validation_labels[:, j], probabilities[:, j], "f1")) for j, key in enumerate(LABEL_KEYS)
        }
        dev_epoch = scores(dev_labels, predict(model, tokenizer, [d["text"] for d in dev], spec, device), epoch_thresholds)
        history.append({
            "epoch": epoch + 1, "train_loss": round(running / steps_per_epoch, 5), "validation_loss": round(validation_loss, 5),
            "dev_min_auc": round(dev_epoch["min_auc"], 4), "dev_mean_f1": round(dev_epoch["mean_f1"], 4),
        })
        print(recipe.name, history[-1], f"{time.monotonic() - started:.0f}s", flush=True)
        if validation_loss < best[0]:
            best = (validation_loss, copy.deepcopy(model.state_dict()), epoch + 1)
    model.load_state_dict(best[1])
    validation_probabilities = predict(model, tokenizer, [r.text for r in validation], spec, device)
    thresholds = {
        key: round(float(choose_threshold(validation_labels[:, j], validation_probabilities[:, j], "f1")), 4)
        for j, key in enumerate(LABEL_KEYS)
    }
    dev_probabilities = predict(model, tokenizer, [d["text"] for d in dev], spec, device)
    result = {
        "recipe": asdict(recipe),
        "best_epoch": best[2],
        "validation_loss": round(best[0], 5),
        "thresholds": thresholds,
        "history": history,
        "dev": scores(dev_labels, dev_probabilities, thresholds),
        "dev_at_0_5": scores(dev_labels, dev_probabilities, {k: 0.5 for k in LABEL_KEYS}),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(recipe.name, "dev", json.dumps({k: result["dev"][k] for k in ("min_auc", "mean_auc", "mean_f1")}), flush=True)
    return result, {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}


WORD_EMBEDDINGS = "encoder.embeddings.word_embeddings.weight"


def write_chunks(state: dict, out: Path, stem: str, limit: int = 15 * 1024 * 1024) -> list[str]:
    from safetensors.torch import save_file

    chunks: list[dict] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if chunks[-1] and size + nbytes > limit:
            chunks.append({})
            size = 0
        chunks[-1][key] = tensor
        size += nbytes
    names = []
    for index, chunk in enumerate(chunks):
        name = f"{stem}.part{index}.safetensors"
        save_file(chunk, str(out / name))
        names.append(name)
    return names


def write_bench_model(folder: Path, encoder_dir: Path, state: dict, result: dict) -> None:
    """weights/ (config.json + fp16 state dict) and version/ (metadata.json + tokenizer.json) of the kept model."""
    import shutil

    from safetensors.torch import save_file

    weights, version = folder / "weights", folder / "version"
    weights.mkdir(parents=True, exist_ok=True)
    version.mkdir(parents=True, exist_ok=True)
    config = json.loads((encoder_dir / "config.json").read_text())
    config["num_hidden_layers"] = result["recipe"]["layers"]
    (weights / "config.json").write_text(json.dumps(config))
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(weights / "model.safetensors"))
    shutil.copy(encoder_dir / "tokenizer.json", version / "tokenizer.json")
    shipped = json.loads((latest_version_dir(REPO_ROOT / "triton_models" / "neurolabel_report") / "metadata.json").read_text())
    shipped.update(thresholds=result["thresholds"], threshold_rule="f1", window={"max_tokens": 512, "overlap": 64},
                   training={"recipe": result["recipe"], "options": {"encoder_layers": result["recipe"]["layers"]}})
    (version / "metadata.json").write_text(json.dumps(shipped, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dev", type=Path, default=REPO_ROOT / "data" / "devset" / "handwritten.jsonl")
    parser.add_argument("--recipes", default="l3,l3-long,l4,l6")
    parser.add_argument("--reports", type=int, default=0, help="override every recipe's corpus size (smoke tests)")
    parser.add_argument("--epochs", type=int, default=0, help="override every recipe's epochs (smoke tests)")
    parser.add_argument("--deadline-seconds", type=float, default=0, help="start no further recipe after this long")
    parser.add_argument("--bench-dir", type=Path, help="also write the kept model for bench/gpu/gpu_throughput.py here")
    parser.add_argument("--keep", default="", help="recipe whose weights are written (default: best dev mean F1 among 3-layer recipes)")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    tokenizer = ReportTokenizer(args.encoder_dir / "tokenizer.json")
    dev = [json.loads(line) for line in args.dev.read_text().splitlines() if line.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    results, states = {}, {}
    started = time.monotonic()
    for name in args.recipes.split(","):
        if results and args.deadline_seconds and time.monotonic() - started > args.deadline_seconds:
            print("deadline: skipping", name, flush=True)
            continue
        recipe = RECIPES[name]
        overrides = {k: v for k, v in (("reports", args.reports), ("epochs", args.epochs)) if v}
        recipe = Recipe(**{**asdict(recipe), **overrides})
        results[name], states[name] = train_recipe(recipe, args.encoder_dir, tokenizer, dev, device)
        (args.out / "recipes.json").write_text(json.dumps(results, indent=1, default=float))
    keep = args.keep or max(
        (n for n in results if results[n]["recipe"]["layers"] <= 3) or results, key=lambda n: results[n]["dev"]["mean_f1"]
    )
    # The word embeddings are frozen: they are the pretrained encoder's, taken from there when unpacking.
    assert results[keep]["recipe"]["freeze_word_embeddings"]
    kept_state = {k: v for k, v in states[keep].items() if k != WORD_EMBEDDINGS}
    files = write_chunks(kept_state, args.out, f"model-{keep}")
    results["kept"] = {"recipe": keep, "files": files}
    if args.bench_dir:
        write_bench_model(args.bench_dir, args.encoder_dir, states[keep], results[keep])
    (args.out / "recipes.json").write_text(json.dumps(results, indent=1, default=float))
    print("kept", keep, files)


if __name__ == "__main__":
    main()
