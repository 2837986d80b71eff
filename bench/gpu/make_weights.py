"""Packs the trained torch weights for the GPU benchmark: config.json + fp16 model.safetensors.

    python bench/gpu/make_weights.py [--checkpoint var/training/model.pt] -o DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))


def main() -> None:
    import torch
    from safetensors.torch import save_file

    from daemon.inference.metadata import ModelMetadata, latest_version_dir
    from daemon.training.model import pretrained_encoder_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "var" / "training" / "model.pt")
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "triton_models")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    metadata = ModelMetadata.load(latest_version_dir(args.repository / "neurolabel_report"))
    layers = int(metadata.training.get("options", {}).get("encoder_layers", 6))
    config = json.loads((pretrained_encoder_dir() / "config.json").read_text())
    config["num_hidden_layers"] = layers
    state = torch.load(args.checkpoint, map_location="cpu")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(args.output / "model.safetensors"))
    print(f"{args.output}: {layers} encoder layers, {sum(v.numel() for v in state.values()) / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
