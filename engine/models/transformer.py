"""Pre-norm decoder-only transformer (dense or MoE FFN) built from a `schemas.models.Transformer` config.

Parameters: `schemas.models.Transformer.param_count(vocab)` counts them from the config in pure Python
(total, MoE-active, embeddings); tests compare it with this module's.

Init: every Linear, Embedding and expert weight ~ normal(0, init_std), except the attention output `wo`
and the FFN output `w2` (dense and expert) ~ normal(0, init_std / sqrt(2 * depth)); biases 0; norms 1.

MoE auxiliary losses are averaged over layers (Switch / torchtitan style):
  aux_loss = load_balance * mean_layers(lb_loss) + z_loss * mean_layers(z_loss)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from schemas.models import Transformer as TransformerConfig
from schemas.models import ffn_hidden

from .layers import MLP, Attention, KVCache, LayerCache, make_norm, rope_cos_sin
from .moe import MoE

__all__ = ["Block", "Transformer", "build"]


def init_normal(module: Attention | MLP, std: float, out_std: float) -> None:
    """Normal(0, std) projections, normal(0, out_std) output projection (wo, w2), zero biases."""
    for name, lin in module.named_children():
        nn.init.normal_(lin.weight, mean=0.0, std=out_std if name in ("wo", "w2") else std)
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)


class Block(nn.Module):
    """One pre-norm block: x + attn(norm1(x)), then + ffn(norm2(x)); returns (x, aux) with MoE stats."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        out_std = cfg.init_std / math.sqrt(2 * cfg.depth)
        self.norm1 = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.kv_heads, causal=True, bias=cfg.bias)
        self.norm2 = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        if cfg.ffn.kind == "moe":
            self.ffn: nn.Module = MoE(cfg.dim, cfg.ffn, cfg.init_std, out_std)
        else:
            self.ffn = MLP(cfg.dim, ffn_hidden(cfg.dim, cfg.ffn), cfg.ffn.activation, cfg.bias)

    def forward(
        self,
        x: Tensor,
        cos: Tensor | None = None,
        sin: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """x [B, L, dim] -> (x [B, L, dim], aux: {} for dense, {lb_loss, z_loss, load} for MoE)."""
        x = x + self.attn(self.norm1(x), cos=cos, sin=sin, cache=cache)
        if isinstance(self.ffn, MoE):
            h, aux = self.ffn(self.norm2(x))
        else:
            h, aux = self.ffn(self.norm2(x)), {}
        return x + h, aux


class Transformer(nn.Module):
    """Decoder-only language model: embeddings, `blocks`, final norm and LM head."""

    def __init__(self, cfg: TransformerConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        pos = cfg.position
        self.tok_emb = nn.Embedding(vocab_size, cfg.dim)
        self.pos_emb: nn.Embedding | None = None
        if pos.kind == "learned":
            self.pos_emb = nn.Embedding(pos.max_len, cfg.dim)
        elif pos.kind == "coupled" and pos.encoding == "learned":
            self.pos_emb = nn.Embedding(pos.max_position, cfg.dim)
        self.rope_base: float | None = None
        if pos.kind == "rope" or (pos.kind == "coupled" and pos.encoding == "rope"):
            self.rope_base = pos.base
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.dim, vocab_size, bias=False)
        # Predictive Position Coupling: the position id of the next token, from the same final hidden state
        self.pos_head: nn.Linear | None = None
        if pos.kind == "coupled" and pos.predict:
            self.pos_head = nn.Linear(cfg.dim, pos.max_position, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        """(Re)initialise every parameter deterministically from the torch RNG (see module docstring)."""
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * self.cfg.depth)
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=std)
        if self.pos_emb is not None:
            nn.init.normal_(self.pos_emb.weight, mean=0.0, std=std)
        for head in (self.lm_head, self.pos_head):
            if head is not None:
                nn.init.normal_(head.weight, mean=0.0, std=std)
        # walk the tree, so blocks wrapped by checkpointing / compile / FSDP are found too
        for m in self.modules():
            if isinstance(m, Attention | MLP):
                init_normal(m, std, out_std)
            elif isinstance(m, MoE):
                m.init_weights()
            elif isinstance(m, nn.RMSNorm | nn.LayerNorm):
                m.reset_parameters()

    def _position_ids(self, tokens: Tensor, positions: Tensor | None, cached: bool) -> Tensor | None:
        """Position ids [L] (0..L-1) or [B, L] (coupled, or the decoder's own under a KV cache); None for NoPE."""
        pos = self.cfg.position
        B, L = tokens.shape
        if pos.kind == "nope":
            return None
        if cached:  # decoding: every sequence's own ids (left padding shifts them), given by the decoder
            if positions is None or positions.shape != tokens.shape:
                raise ValueError("decoding with a KV cache needs position ids [B, L] for the new tokens")
            return positions.long()
        if pos.kind == "coupled":
            if positions is None:
                raise ValueError(
                    "position kind 'coupled' needs position ids: call model(tokens, positions) with a "
                    "[B, L] LongTensor (the data generator's `positions`)"
                )
            if positions.shape != tokens.shape:
                raise ValueError(
                    f"positions shape {tuple(positions.shape)} != tokens shape {tuple(tokens.shape)}"
                )
            return positions.long()
        if pos.kind == "learned" and L > pos.max_len:
            raise ValueError(f"sequence length {L} exceeds position.max_len={pos.max_len}; raise max_len")
        return torch.arange(L, device=tokens.device)

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        head: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """tokens [B, L] (+ positions [B, L] for coupled) -> (logits [B, L, V], aux dict); with `head=False`, the
        final normalised hidden states [B, L, dim] instead of logits (what a value head reads).

        `positions` is ignored unless the position kind is 'coupled', or a `cache` is given: then tokens are
        the next columns of the sequences being decoded (`cache.step` was told which are padding), positions
        are their ids for every position kind, and their keys and values are appended to the cache.
        """
        ids = self._position_ids(tokens, positions, cache is not None)
        x = self.tok_emb(tokens)  # [B, L, dim]
        if self.pos_emb is not None:
            x = x + self.pos_emb(ids)  # ids [L] or [B, L]
        cos = sin = None
        if self.rope_base is not None:
            cos, sin = rope_cos_sin(ids, self.cfg.head_dim, self.rope_base)  # [B or 1, 1, L, hd]

        moe_stats: dict[str, list[Tensor]] = {}
        for i, block in enumerate(self.blocks):
            x, block_aux = block(x, cos, sin, cache=None if cache is None else cache.layers[i])
            for key, value in block_aux.items():
                moe_stats.setdefault(key, []).append(value)

        x = self.norm(x)
        if not head:
            return x, {}
        logits = (
            self.lm_head(x) if self.lm_head is not None else F.linear(x, self.tok_emb.weight)
        )  # [B, L, V]

        aux: dict[str, Tensor] = {}
        if self.pos_head is not None:
            aux["position_logits"] = self.pos_head(x)  # [B, L, max_position]: the next token's position id
        if moe_stats:
            ffn = self.cfg.ffn
            for key, values in moe_stats.items():
                aux[f"moe/{key}"] = torch.stack(values).mean(dim=0)
            aux["aux_loss"] = ffn.load_balance * aux["moe/lb_loss"] + ffn.z_loss * aux["moe/z_loss"]
        else:
            aux["aux_loss"] = torch.zeros((), device=tokens.device)
        return logits, aux


def build(cfg: TransformerConfig, vocab_size: int) -> Transformer:
    """Build the transformer of a config for a vocabulary of `vocab_size` tokens."""
    return Transformer(cfg, vocab_size)
