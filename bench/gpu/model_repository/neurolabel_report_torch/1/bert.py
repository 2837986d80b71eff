"""A BERT encoder for inference only, with the parameter names of transformers' BertModel.

Used by the GPU benchmark model so that the Triton python-backend stub needs only torch (not
transformers and its network stack); attention runs through torch's scaled_dot_product_attention.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Embeddings(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden = config["hidden_size"]
        self.word_embeddings = nn.Embedding(config["vocab_size"], hidden)
        self.position_embeddings = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type_embeddings = nn.Embedding(config["type_vocab_size"], hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config["layer_norm_eps"])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        embedded = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(embedded)


class SelfAttention(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)


class Dense(nn.Module):
    def __init__(self, size_in: int, size_out: int, eps: float | None = None) -> None:
        super().__init__()
        self.dense = nn.Linear(size_in, size_out)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(size_out, eps=eps)


class Attention(nn.Module):
    def __init__(self, hidden: int, eps: float) -> None:
        super().__init__()
        self.self = SelfAttention(hidden)
        self.output = Dense(hidden, hidden, eps)


class Layer(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.heads = config["num_attention_heads"]
        self.attention = Attention(hidden, eps)
        self.intermediate = Dense(hidden, config["intermediate_size"])
        self.output = Dense(config["intermediate_size"], hidden, eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, tokens, hidden = x.shape
        attention = self.attention.self

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, tokens, self.heads, hidden // self.heads).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            split(attention.query(x)), split(attention.key(x)), split(attention.value(x)), attn_mask=bias
        )
        context = context.transpose(1, 2).reshape(batch, tokens, hidden)
        x = self.attention.output.LayerNorm(self.attention.output.dense(context) + x)
        inner = F.gelu(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dense(inner) + x)


class Encoder(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config["num_hidden_layers"]))


class Bert(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        # Additive mask, finite so fp16 never sees -inf - -inf.
        bias = ((1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min / 2)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x


class WindowModel(nn.Module):
    """Encoder + the label attention head of daemon.training.model.WindowModel (same parameter names)."""

    def __init__(self, config: dict, n_labels: int, masked_score: float = -1.0e4) -> None:
        super().__init__()
        self.encoder = Bert(config)
        self.head = nn.Module()
        self.head.score = nn.Linear(config["hidden_size"], n_labels)
        self.head.weight = nn.Parameter(torch.empty(n_labels, config["hidden_size"]))
        self.head.bias = nn.Parameter(torch.zeros(n_labels))
        self.masked_score = masked_score

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor):
        hidden = self.encoder(input_ids, attention_mask)
        scores = self.head.score(hidden).float()
        scores = scores.masked_fill(~(pool_mask.unsqueeze(-1) > 0), self.masked_score)
        lse = torch.logsumexp(scores, dim=1)
        attention = torch.exp(scores - lse.unsqueeze(1))
        pooled = torch.einsum("wtl,wth->wlh", attention, hidden.float())
        logits = (pooled * self.head.weight.float()).sum(-1) + self.head.bias.float()
        return logits, lse


def load(config: dict, state: dict, n_labels: int) -> WindowModel:
    model = WindowModel(config, n_labels)
    wanted = set(model.state_dict())
    missing = wanted - set(state)
    if missing:
        raise ValueError(f"weights lack {sorted(missing)[:3]}")
    model.load_state_dict({k: v for k, v in state.items() if k in wanted})
    return model

