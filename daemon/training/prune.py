"""Attention-head pruning of an exported model: fewer heads, same weights otherwise, no retraining.

An attention layer's output is the sum over heads of (that head's context) x (its rows of the output
projection), so removing head h is exactly the model with h's output-projection rows set to zero, and
slicing h's Q, K and V columns and its output-projection rows out of the graph gives that model with
less work: the attention core (the largest cost of the int8 CPU graph) and the QKV and output
projections shrink in proportion. Which heads go is decided on generated reports by how much removing
each one alone moves the report logits (mean squared change; Michel et al. 2019 score heads the same
way with a gradient proxy); the thresholds are then chosen again, by the model's own rule, on
generated reports of another seed. Both served graphs (int8 CPU, fp16 GPU) lose the same heads.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from daemon.inference.metadata import TOKENIZER_FILE, ModelMetadata
from daemon.inference.runtime import OnnxReportModel, RuntimeOptions
from daemon.labels import LABEL_KEYS
from daemon.training.generator import generate_corpus

log = logging.getLogger("neurolabel.training.prune")

ATTENTION_OPS = frozenset({"Attention", "QAttention"})
# Ops between an attention node's output and the output projection's weight input.
PASS_THROUGH_OPS = frozenset({"DynamicQuantizeLinear", "Cast"})
PROJECTION_OPS = frozenset({"MatMul", "MatMulInteger"})


class PruningError(ValueError):
    """The graph is not one this module knows how to prune, or the request does not fit it."""


@dataclass(frozen=True)
class AttentionLayer:
    node: str  # the (Q)Attention node's name
    heads: int
    head_size: int
    qkv_weight: str  # initializer [hidden_in, 3 * heads * head_size]
    qkv_bias: str  # initializer [3 * heads * head_size]
    output_weight: str  # initializer [heads * head_size, hidden_out]


Removal = Mapping[int, Collection[int]]  # layer index -> heads to remove


def attention_layers(graph: onnx.ModelProto) -> list[AttentionLayer]:
    """The graph's attention layers in order, with the initializers that carry each head."""
    initializers = {init.name: init for init in graph.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers = []
    for node in graph.graph.node:
        if node.op_type not in ATTENTION_OPS:
            continue
        heads = next((a.i for a in node.attribute if a.name == "num_heads"), 0)
        weight, bias = node.input[1], node.input[2]
        if heads < 1 or weight not in initializers or bias not in initializers:
            raise PruningError(f"attention node {node.name!r} has no constant QKV weight and bias")
        width = int(initializers[weight].dims[1])
        if width % (3 * heads):
            raise PruningError(f"attention node {node.name!r}: QKV width {width} is not 3 x {heads} heads")
        layers.append(
            AttentionLayer(node.name, heads, width // (3 * heads), weight, bias, _output_projection(node, consumers, initializers))
        )
    if not layers:
        raise PruningError("the graph has no Attention or QAttention node")
    return layers


def _output_projection(
    node: onnx.NodeProto, consumers: Mapping[str, list[onnx.NodeProto]], initializers: Mapping[str, onnx.TensorProto]
) -> str:
    value = node.output[0]
    for _ in range(4):
        users = consumers.get(value, [])
        projection = [user for user in users if user.op_type in PROJECTION_OPS and user.input[0] == value]
        if len(users) == 1 and projection and projection[0].input[1] in initializers:
            return projection[0].input[1]
        if len(users) != 1 or users[0].op_type not in PASS_THROUGH_OPS:
            break
        value = users[0].output[0]
    raise PruningError(f"attention node {node.name!r}: its output does not feed one constant output projection")


def prune_heads(graph: onnx.ModelProto, removal: Removal) -> onnx.ModelProto:
    """A copy of `graph` without the given heads (layer index -> head indices)."""
    layers = attention_layers(graph)
    for layer, heads in removal.items():
        if not 0 <= layer < len(layers):
            raise PruningError(f"no attention layer {layer} (the graph has {len(layers)})")
        if any(not 0 <= h < layers[layer].heads for h in heads):
            raise PruningError(f"layer {layer} has heads 0..{layers[layer].heads - 1}, asked to remove {sorted(heads)}")
        if len(set(heads)) >= layers[layer].heads:
            raise PruningError(f"layer {layer} would keep no head")
    pruned = onnx.ModelProto()
    pruned.CopyFrom(graph)
    initializers = {init.name: init for init in pruned.graph.initializer}
    nodes = {node.name: node for node in pruned.graph.node}
    for index, layer in enumerate(layers):
        gone = set(removal.get(index, ()))
        if not gone:
            continue
        keep = [h for h in range(layer.heads) if h not in gone]
        size, hidden = layer.head_size, layer.heads * layer.head_size
        rows = np.concatenate([np.arange(h * size, (h + 1) * size) for h in keep])
        columns = np.concatenate([part * hidden + rows for part in range(3)])  # Q, K, V blocks
        _replace(initializers[layer.qkv_weight], lambda w: w[:, columns])
        _replace(initializers[layer.qkv_bias], lambda b: b[columns])
        _replace(initializers[layer.output_weight], lambda w: w[rows, :])
        for attribute in nodes[layer.node].attribute:
            if attribute.name == "num_heads":
                attribute.i = len(keep)
    return pruned


def _replace(initializer: onnx.TensorProto, change: Callable[[np.ndarray], np.ndarray]) -> None:
    initializer.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(change(numpy_helper.to_array(initializer))), initializer.name))


def head_importance(version_dir: Path, graph: onnx.ModelProto, texts: Sequence[str]) -> dict[tuple[int, int], float]:
    """For each (layer, head) of `graph` (the version's CPU graph): mean squared change of the report logits without it."""
    options = RuntimeOptions(intra_op_threads=1, allow_spinning=False)
    reference = OnnxReportModel(version_dir, options, graph=graph.SerializeToString()).logits(texts)
    scores: dict[tuple[int, int], float] = {}
    for index, layer in enumerate(attention_layers(graph)):
        for head in range(layer.heads):
            model = OnnxReportModel(version_dir, options, graph=prune_heads(graph, {index: [head]}).SerializeToString())
            scores[(index, head)] = float(np.mean((model.logits(texts) - reference) ** 2))
    return scores


def least_important(scores: Mapping[tuple[int, int], float], count: int) -> dict[int, list[int]]:
    """The `count` heads whose removal moves the logits least, by layer (ties: lower layer, then head)."""
    chosen = sorted(scores, key=lambda key: (scores[key], key))[:count]
    removal: dict[int, list[int]] = {}
    for layer, head in sorted(chosen):
        removal.setdefault(layer, []).append(head)
    return removal


@dataclass(frozen=True)
class PruneOptions:
    source: Path  # a version folder of the model repository
    version: str  # version folder written next to it
    heads: int  # heads removed in all
    scoring_reports: int = 300
    scoring_seed: int = 4242
    validation_reports: int = 2000
    validation_seed: int = 20240602
    release: str = ""


@dataclass(frozen=True)
class PruneResult:
    version_dir: Path
    removal: dict[int, list[int]]
    thresholds: dict[str, float]
    seconds: float


def run_pruning(options: PruneOptions, command: str = "") -> PruneResult:
    """Score the source model's heads, write the pruned model as a new version with new thresholds."""
    from daemon.training.export import write_repository
    from daemon.training.train import choose_thresholds

    started = time.monotonic()
    source = ModelMetadata.load(options.source)
    model_dir = options.source.parent
    target = model_dir / options.version
    if target.resolve() == options.source.resolve():
        raise PruningError("the pruned model needs a version other than its source's")
    cpu_graph = onnx.load(str(options.source / source.onnx_files["cpu"]))
    total = sum(layer.heads for layer in attention_layers(cpu_graph))
    if not 0 < options.heads < total:
        raise PruningError(f"--heads must be between 1 and {total - 1}")
    scoring = [r.text for r in generate_corpus(options.scoring_reports, options.scoring_seed)]
    scores = head_importance(options.source, cpu_graph, scoring)
    removal = least_important(scores, options.heads)
    log.info("removing heads %s", removal)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for variant, file_name in source.onnx_files.items():
        graph = cpu_graph if variant == "cpu" else onnx.load(str(options.source / file_name))
        onnx.save(prune_heads(graph, removal), str(target / file_name))
    kept = total - options.heads
    metadata = dataclasses.replace(
        source,
        version=options.version,
        release=options.release or time.strftime("%Y%m%d"),
        encoder=f"{source.encoder}, {kept} of {total} attention heads",
        training=source.training
        | {
            "pruning": {
                "source_version": source.version,
                "source_release": source.release,
                "removed_heads": {str(layer): heads for layer, heads in removal.items()},
                "criterion": "mean squared change of the report logits with the head alone removed",
                "head_scores": {f"{layer}.{head}": round(score, 5) for (layer, head), score in sorted(scores.items())},
                "scoring": f"generator n={options.scoring_reports} seed={options.scoring_seed}",
                "thresholds_chosen_on": f"generator n={options.validation_reports} seed={options.validation_seed}",
                "command": command,
            }
        },
    )
    write_repository(metadata, options.source / TOKENIZER_FILE, model_dir, target)
    validation = list(generate_corpus(options.validation_reports, options.validation_seed))
    probabilities = OnnxReportModel(target).predict([r.text for r in validation])[0].astype(np.float64)
    labels = np.asarray([[r.labels[key] for key in LABEL_KEYS] for r in validation])
    thresholds = choose_thresholds(labels, probabilities, source.threshold_rule)
    write_repository(dataclasses.replace(metadata, thresholds=thresholds), options.source / TOKENIZER_FILE, model_dir, target)
    seconds = time.monotonic() - started
    log.info("pruned model written to %s in %.0f s; thresholds %s", target, seconds, thresholds)
    return PruneResult(target, removal, thresholds, seconds)
