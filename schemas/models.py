"""Model configs: the decoder-only transformer, its position encodings and its feed-forward kinds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Problems, Strict, kinded, spec_error

# ----------------------------------------------------------------------------- position encodings


class LearnedPosition(Strict):
    """A learned absolute position table, indexed 0..L-1."""

    kind: Literal["learned"] = Field("learned", description="Learned absolute position embeddings.")
    max_len: int = Field(
        1024, gt=0, description="Rows of the position table: the longest sequence the model can read."
    )


class RopePosition(Strict):
    """Rotary position embedding on queries and keys, positions 0..L-1."""

    kind: Literal["rope"] = Field("rope", description="Rotary position embedding (RoPE).")
    base: float = Field(10000.0, gt=1.0, description="RoPE frequency base theta.")


class NoPosition(Strict):
    """No position information at all (causal masking alone breaks the symmetry)."""

    kind: Literal["nope"] = Field("nope", description="No position encoding (NoPE).")


class CoupledPosition(Strict):
    """Position ids come with the batch (position coupling) and drive RoPE or a learned table."""

    kind: Literal["coupled"] = Field(
        "coupled", description="Position ids taken from the batch (position coupling)."
    )
    encoding: Literal["rope", "learned"] = Field("rope", description="How the coupled ids are encoded.")
    max_position: int = Field(
        1024,
        gt=0,
        description="Largest position id + 1 (rows of the learned table; bound checked on the data).",
    )
    base: float = Field(10000.0, gt=1.0, description="RoPE frequency base theta (encoding: rope).")


Position = kinded(
    LearnedPosition,
    RopePosition,
    NoPosition,
    CoupledPosition,
    default="rope",
    description="Position encoding: learned | rope | nope | coupled (default rope).",
)

# ----------------------------------------------------------------------------- feed-forward


class DenseFFN(Strict):
    """A dense MLP: GELU (Linear-GELU-Linear) or SwiGLU (gated, three matrices)."""

    kind: Literal["dense"] = Field("dense", description="Dense feed-forward block.")
    hidden: int | None = Field(
        None, gt=0, description="Hidden width; default 4*dim (GELU) or 8/3*dim rounded to 64 (SwiGLU)."
    )
    activation: Literal["gelu", "swiglu"] = Field("gelu", description="GELU MLP or SwiGLU gated MLP.")


class MoEFFN(Strict):
    """A mixture of experts: softmax router, top-k, dropless sorted dispatch, Switch balancing and z-loss."""

    kind: Literal["moe"] = Field("moe", description="Mixture-of-experts feed-forward block.")
    experts: int = Field(8, ge=1, description="Number of experts per layer.")
    top_k: int = Field(2, ge=1, description="Experts each token is routed to (must not exceed `experts`).")
    hidden: int | None = Field(None, gt=0, description="Hidden width of each expert; default as DenseFFN.")
    activation: Literal["gelu", "swiglu"] = Field("gelu", description="Expert MLP kind.")
    capacity_factor: float | None = Field(
        None,
        gt=0,
        description="Per-expert token capacity = factor * tokens * top_k / experts; overflow is dropped. null = dropless.",
    )
    load_balance: float = Field(0.01, ge=0, description="Coefficient of the Switch load-balancing loss.")
    z_loss: float = Field(
        0.001, ge=0, description="Coefficient of the router z-loss (mean squared logsumexp)."
    )
    renormalize: bool = Field(True, description="Renormalise the top-k router probabilities to sum to 1.")

    @model_validator(mode="after")
    def _top_k_fits(self) -> MoEFFN:
        if self.top_k > self.experts:
            raise spec_error(
                "top_k", f"top_k={self.top_k} exceeds experts={self.experts}; set top_k <= experts"
            )
        return self


FFN = kinded(DenseFFN, MoEFFN, default="dense", description="Feed-forward kind: dense | moe (default dense).")


def ffn_hidden(dim: int, ffn: DenseFFN | MoEFFN) -> int:
    """The hidden width an FFN config resolves to (shared by the plan and the model builder)."""
    if ffn.hidden is not None:
        return ffn.hidden
    if ffn.activation == "swiglu":
        return 64 * ((8 * dim // 3 + 63) // 64)
    return 4 * dim


# ----------------------------------------------------------------------------- transformer


class Transformer(Strict):
    """Pre-norm decoder-only transformer with SDPA attention (causal), optional grouped KV heads."""

    kind: Literal["transformer"] = Field("transformer", description="Decoder-only transformer.")
    dim: int = Field(256, gt=0, description="Model width (residual stream).")
    depth: int = Field(4, gt=0, description="Number of blocks.")
    heads: int = Field(4, gt=0, description="Attention heads; must divide dim.")
    kv_heads: int | None = Field(
        None, gt=0, description="Key/value heads (grouped-query attention); default = heads."
    )
    norm: Literal["rmsnorm", "layernorm"] = Field("rmsnorm", description="Normalisation layer kind.")
    norm_eps: float = Field(1e-5, gt=0, description="Epsilon of the normalisation layers.")
    bias: bool = Field(False, description="Biases in the linear layers.")
    position: Position = Field(default_factory=RopePosition)
    ffn: FFN = Field(default_factory=DenseFFN)
    vocab_size: int | None = Field(
        None, gt=0, description="Vocabulary size; default: the data generator's vocabulary."
    )
    tie_embeddings: bool = Field(False, description="Share the input embedding and the output head.")
    init_std: float = Field(
        0.02, gt=0, description="Std of the normal init; output projections get std/sqrt(2*depth)."
    )

    @model_validator(mode="after")
    def _shapes(self) -> Transformer:
        p = Problems()
        if self.dim % self.heads:
            p.add("heads", f"{self.heads} does not divide dim={self.dim}; pick heads with dim % heads == 0")
        kv = self.kv_heads or self.heads
        if self.heads % kv:
            p.add("kv_heads", f"{kv} does not divide heads={self.heads}; kv_heads must divide heads")
        rope = self.position.kind == "rope" or (
            self.position.kind == "coupled" and self.position.encoding == "rope"
        )
        if rope and not self.dim % self.heads and (self.dim // self.heads) % 2:
            p.add(
                "heads",
                f"RoPE needs an even head dim, got dim/heads={self.dim // self.heads}; change heads or dim",
            )
        p.check()
        return self

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.heads

    @property
    def context(self) -> int | None:
        """The longest sequence the position encoding allows (None: unbounded)."""
        if self.position.kind == "learned":
            return self.position.max_len
        return None


Model = kinded(Transformer, default="transformer", description="The model of a stage, by `kind`.")
