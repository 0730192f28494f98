"""Model configs: the decoder-only transformer (positions, FFN kinds), the video ViT, predictor and probe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from .base import Depth, Experts, Heads, Hidden, Problems, Strict, Tokens, Width, kinded, spec_error

# ----------------------------------------------------------------------------- costs


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of one model: all of them, those a token uses (MoE), embeddings, the largest block."""

    total: int
    active: int  # MoE: router + top_k experts per layer instead of all experts; equals total for dense
    embedding: int  # tok_emb + pos_emb + lm_head (0 when tied) + pos_head (PPC); ViT: the patch embedding
    largest_block: int  # one entry of `model.blocks` (all blocks are identical)
    root: int  # parameters outside the blocks: embeddings, position table, final norm, lm_head
    frozen: int = 0  # parameters only run forward (a frozen teacher or encoder, an EMA target)


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step: 6·N·D of the trained networks and 2·N·D of frozen forward passes (the
    papers' convention, embeddings counted, attention scores not), and attention scores (QK^T and AV)."""

    six_nd: float = 0.0
    frozen_2nd: float = 0.0
    attention: float = 0.0

    @property
    def total(self) -> float:
        """Everything: 6·N·D + 2·N·D frozen + attention."""
        return self.six_nd + self.frozen_2nd + self.attention


def bidirectional_attention_flops(dim: int, depth: int, length: float) -> float:
    """Forward attention-score FLOPs of one sequence without a causal mask: 2 * 2 * dim * L^2 per layer."""
    return 4.0 * dim * depth * length * length


def vit_block_params(dim: int, mlp: int, qkv_bias: bool = True) -> int:
    """One pre-LN ViT block: two LayerNorms, qkv (+ bias), proj + bias, GELU MLP fc1 + bias, fc2 + bias."""
    norms = 2 * 2 * dim
    attn = dim * 3 * dim + (3 * dim if qkv_bias else 0) + dim * dim + dim
    return norms + attn + dim * mlp + mlp + mlp * dim + dim


def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


# ----------------------------------------------------------------------------- position encodings


class LearnedPosition(Strict):
    """A learned absolute position table, indexed 0..L-1."""

    kind: Literal["learned"] = Field("learned", description="Learned absolute position embeddings.")
    max_len: Tokens = Field(
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
    max_position: Tokens = Field(
        1024,
        gt=0,
        description="How many position ids the model takes, 0..max_position-1 (rows of a learned table); at "
        "least the data's max_position_id + 1.",
    )
    base: float = Field(10000.0, gt=1.0, description="RoPE frequency base theta (encoding: rope).")
    predict: bool = Field(
        False,
        description="Predictive Position Coupling: a second head Linear(dim -> max_position) predicts each next "
        "token's position id (trained by next_token's ppc_weight); generation feeds the predicted ids back.",
    )


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
    hidden: Hidden | None = Field(
        None, gt=0, description="Hidden width; default 4*dim (GELU) or 8/3*dim rounded to 64 (SwiGLU)."
    )
    activation: Literal["gelu", "swiglu"] = Field("gelu", description="GELU MLP or SwiGLU gated MLP.")


class MoEFFN(Strict):
    """A mixture of experts: softmax router, top-k, dropless sorted dispatch, Switch balancing and z-loss."""

    kind: Literal["moe"] = Field("moe", description="Mixture-of-experts feed-forward block.")
    experts: Experts = Field(8, ge=1, description="Number of experts per layer.")
    top_k: int = Field(2, ge=1, description="Experts each token is routed to (must not exceed `experts`).")
    hidden: Hidden | None = Field(None, gt=0, description="Hidden width of each expert; default as DenseFFN.")
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
    dim: Width = Field(256, gt=0, description="Model width (residual stream).")
    depth: Depth = Field(4, gt=0, description="Number of blocks.")
    heads: Heads = Field(4, gt=0, description="Attention heads; must divide dim.")
    kv_heads: Heads | None = Field(
        None, gt=0, description="Key/value heads (grouped-query attention); default = heads."
    )
    norm: Literal["rmsnorm", "layernorm"] = Field("rmsnorm", description="Normalisation layer kind.")
    norm_eps: float = Field(1e-5, gt=0, description="Epsilon of the normalisation layers.")
    bias: bool = Field(False, description="Biases in the linear layers.")
    position: Position = Field(default_factory=RopePosition)
    ffn: FFN = Field(default_factory=DenseFFN)
    vocab_size: Tokens | None = Field(
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

    def weight_shapes(self, vocab_size: int | None) -> dict[str, Any]:
        """What fixes the names and shapes of this model's weights: two models load each other's weights
        exactly when these agree (checked by `init: {stage: ...}` at validation, without building either)."""
        pos, ffn = self.position, self.ffn
        table = None
        if pos.kind == "learned":
            table = pos.max_len
        elif pos.kind == "coupled" and pos.encoding == "learned":
            table = pos.max_position
        return {
            "kind": self.kind,
            "dim": self.dim,
            "depth": self.depth,
            "key/value width": (self.kv_heads or self.heads) * self.head_dim,
            "norm": self.norm,
            "bias": self.bias,
            "vocabulary": vocab_size,
            "position table rows": table,
            "tie_embeddings": self.tie_embeddings,
            "ffn.kind": ffn.kind,
            "ffn hidden width": ffn_hidden(self.dim, ffn),
            "ffn.activation": ffn.activation,
            "ffn.experts": getattr(ffn, "experts", None),
            "position head": pos.max_position if pos.kind == "coupled" and pos.predict else None,
        }

    @property
    def context(self) -> int | None:
        """The longest sequence the position encoding allows (None: unbounded)."""
        if self.position.kind == "learned":
            return self.position.max_len
        return None

    def _norm_params(self) -> int:
        return self.dim if self.norm == "rmsnorm" else 2 * self.dim

    def block_params(self, active: bool = False) -> int:
        """Parameters of one block; with `active`, MoE counts top_k experts instead of all."""
        dim, b = self.dim, self.bias
        kv_dim = (self.kv_heads or self.heads) * self.head_dim
        attn = _linear(dim, dim, b) + 2 * _linear(dim, kv_dim, b) + _linear(dim, dim, b)
        ffn = self.ffn
        h = ffn_hidden(dim, ffn)
        matrices = 3 if ffn.activation == "swiglu" else 2
        if isinstance(ffn, MoEFFN):
            experts = ffn.top_k if active else ffn.experts
            mlp = dim * ffn.experts + experts * matrices * dim * h  # router (no bias) + bias-free experts
        elif ffn.activation == "swiglu":
            mlp = 2 * _linear(dim, h, b) + _linear(h, dim, b)
        else:
            mlp = _linear(dim, h, b) + _linear(h, dim, b)
        return 2 * self._norm_params() + attn + mlp

    def param_count(self, vocab_size: int) -> ParamCount:
        """Exact parameter counts of the model built from this config with a vocabulary of `vocab_size`."""
        pos = self.position
        table = 0  # rope, nope, coupled rope
        if pos.kind == "learned":
            table = pos.max_len * self.dim
        elif pos.kind == "coupled" and pos.encoding == "learned":
            table = pos.max_position * self.dim
        lm_head = 0 if self.tie_embeddings else self.dim * vocab_size
        if (
            pos.kind == "coupled" and pos.predict
        ):  # the PPC head: a second output matrix, counted with lm_head
            lm_head += self.dim * pos.max_position
        embedding = vocab_size * self.dim + table + lm_head
        root = embedding + self._norm_params()  # + final norm
        return ParamCount(
            total=root + self.depth * self.block_params(),
            active=root + self.depth * self.block_params(active=True),
            embedding=embedding,
            largest_block=self.block_params(),
            root=root,
        )

    def train_flops(self, vocab_size: int, tokens: float, sum_t_t1: float) -> StepFlops:
        """Training FLOPs over sequences of `tokens` tokens in all whose T*(T+1) sum to `sum_t_t1`: 6·N_active·D,
        and causal attention scores, 3x forward (2 FLOPs per MAC * 2 matmuls * dim * T*(T+1)/2 per layer)."""
        n = self.param_count(vocab_size).active
        return StepFlops(six_nd=6.0 * n * tokens, attention=3.0 * 2.0 * self.dim * self.depth * sum_t_t1)


# ----------------------------------------------------------------------------- video ViT (SALT / V-JEPA 2)

# The paper's ViT sizes (SALT App. B): width, depth, heads, MLP hidden width.
VIT_SIZES: dict[str, dict[str, int]] = {
    "B": {"dim": 768, "depth": 12, "heads": 12, "mlp": 3072},
    "L": {"dim": 1024, "depth": 24, "heads": 16, "mlp": 4096},
    "H": {"dim": 1280, "depth": 32, "heads": 16, "mlp": 5120},
    "g": {"dim": 1408, "depth": 40, "heads": 16, "mlp": 6144},
    "G": {"dim": 1664, "depth": 48, "heads": 16, "mlp": 8192},
}


def rope3d_chunk(head_dim: int) -> int:
    """Channels 3D RoPE rotates per axis (frame, row, column): 2 * floor(floor(head_dim / 3) / 2)."""
    return 2 * ((head_dim // 3) // 2)


class ViT(Strict):
    """Video ViT encoder: tubelet patch embed, no CLS token, pre-LN blocks, 3D RoPE or fixed sin-cos."""

    kind: Literal["vit"] = Field("vit", description="Video vision transformer (V-JEPA 2 / SALT encoder).")
    size: Literal["B", "L", "H", "g", "G"] | None = Field(
        None,
        description="Paper preset (B 768/12/12/3072 ... G 1664/48/16/8192) filling dim, depth, heads and "
        "mlp; those fields given next to it override the preset.",
    )
    dim: Width = Field(192, gt=0, description="Width (residual stream); default 192, or the size preset's.")
    depth: Depth = Field(6, gt=0, description="Number of blocks; default 6, or the size preset's.")
    heads: Heads = Field(3, gt=0, description="Attention heads, must divide dim; default 3, or the preset's.")
    mlp: Hidden = Field(768, gt=0, description="Hidden width of the GELU MLP; default 768, or the preset's.")
    patch: int = Field(16, gt=0, description="Spatial patch size in pixels (height = width).")
    tubelet: int = Field(2, gt=0, description="Frames per token (temporal patch size).")
    channels: int = Field(3, gt=0, description="Input channels per pixel.")
    frames: int = Field(16, gt=0, description="Frames per clip; must be divisible by tubelet.")
    resolution: int = Field(224, gt=0, description="Clip height and width in pixels; divisible by patch.")
    position: Literal["rope", "sincos"] = Field(
        "rope",
        description="3D RoPE on queries and keys (V-JEPA 2), or fixed 3D sin-cos positions added after "
        "the patch embedding (V-JEPA).",
    )
    norm_eps: float = Field(1e-6, gt=0, description="Epsilon of the LayerNorms.")
    qkv_bias: bool = Field(True, description="Biases in the query/key/value projection.")
    init_std: float = Field(
        0.02,
        gt=0,
        description="Std of the truncated-normal init; block i's output projections are divided by "
        "sqrt(2*i).",
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """Fill dim/depth/heads/mlp from the size preset where the mapping does not give them."""
        if isinstance(data, dict) and isinstance(data.get("size"), str) and data["size"] in VIT_SIZES:
            data = dict(data)
            for key, value in VIT_SIZES[data["size"]].items():
                data.setdefault(key, value)
        return data

    @model_validator(mode="after")
    def _shapes(self) -> ViT:
        p = Problems()
        if self.dim % self.heads:
            p.add("heads", f"{self.heads} does not divide dim={self.dim}; pick heads with dim % heads == 0")
        elif self.position == "rope" and rope3d_chunk(self.head_dim) < 2:
            p.add(
                "heads",
                f"3D RoPE needs a head dim of at least 6 (three rotated pairs), got dim/heads="
                f"{self.head_dim}; use fewer heads or position: sincos",
            )
        if self.resolution % self.patch:
            p.add(
                "resolution",
                f"{self.resolution} is not divisible by patch={self.patch}; "
                "pick a resolution that is a multiple of patch",
            )
        if self.frames % self.tubelet:
            p.add(
                "frames",
                f"{self.frames} is not divisible by tubelet={self.tubelet}; "
                "pick frames that are a multiple of tubelet",
            )
        p.check()
        return self

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.heads

    def weight_shapes(self, vocab_size: int | None = None) -> dict[str, Any]:
        """What fixes the names and shapes of this model's weights (positions are RoPE or a fixed table, so
        frames and resolution do not): two encoders load each other's weights exactly when these agree."""
        return {
            "kind": self.kind,
            "dim": self.dim,
            "depth": self.depth,
            "mlp": self.mlp,
            "patch": self.patch,
            "tubelet": self.tubelet,
            "channels": self.channels,
            "qkv_bias": self.qkv_bias,
        }

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (frames // tubelet, resolution // patch, resolution // patch)."""
        side = self.resolution // self.patch
        return (self.frames // self.tubelet, side, side)

    @property
    def tokens(self) -> int:
        """Tokens per clip: t * h * w (1568 for 16 frames at 224 px)."""
        t, h, w = self.grid
        return t * h * w

    @property
    def patch_dim(self) -> int:
        """Input values per token: tubelet * patch * patch * channels."""
        return self.tubelet * self.patch * self.patch * self.channels

    def param_count(self) -> ParamCount:
        """Exact parameter counts of `engine.models.vit`: Conv3d patch embedding, `depth` blocks, final
        LayerNorm (positions are RoPE or a fixed buffer)."""
        embedding = self.patch_dim * self.dim + self.dim
        block = vit_block_params(self.dim, self.mlp, self.qkv_bias)
        total = embedding + self.depth * block + 2 * self.dim
        return ParamCount(total, total, embedding, block, total - self.depth * block)

    def params(self) -> int:
        """All parameters (`param_count().total`)."""
        return self.param_count().total

    def attention_flops(self, length: float) -> float:
        """Forward attention-score FLOPs over one clip of `length` tokens."""
        return bidirectional_attention_flops(self.dim, self.depth, length)


class Predictor(Strict):
    """JEPA predictor: narrow pre-LN transformer over context tokens plus learned mask tokens, 3D RoPE."""

    kind: Literal["predictor"] = Field("predictor", description="Masked-latent predictor (V-JEPA / SALT).")
    dim: Width = Field(384, gt=0, description="Predictor width.")
    depth: Depth = Field(12, gt=0, description="Number of blocks.")
    heads: Heads = Field(16, gt=0, description="Attention heads; must divide dim.")
    mlp: Hidden = Field(1536, gt=0, description="Hidden width of the GELU MLP.")
    mask_tokens: int = Field(
        2, gt=0, description="Learned, zero-initialised mask tokens: one per mask generator."
    )
    norm_eps: float = Field(1e-6, gt=0, description="Epsilon of the LayerNorms.")
    init_std: float = Field(
        0.02,
        gt=0,
        description="Std of the truncated-normal init; block i's output projections are divided by "
        "sqrt(2*i).",
    )

    @model_validator(mode="after")
    def _shapes(self) -> Predictor:
        p = Problems()
        if self.dim % self.heads:
            p.add("heads", f"{self.heads} does not divide dim={self.dim}; pick heads with dim % heads == 0")
        elif rope3d_chunk(self.head_dim) < 2:
            p.add(
                "heads",
                f"3D RoPE needs a head dim of at least 6 (three rotated pairs), got dim/heads="
                f"{self.head_dim}; use fewer heads or a wider predictor",
            )
        p.check()
        return self

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.heads

    def params(self, in_dim: int, out_dim: int) -> int:
        """Exact parameters of `engine.models.predictor`: input Linear, mask tokens, `depth` blocks, LayerNorm,
        output Linear (biases throughout)."""
        d = self.dim
        blocks = self.depth * vit_block_params(d, self.mlp)
        return in_dim * d + d + self.mask_tokens * d + blocks + 2 * d + d * out_dim + out_dim

    def attention_flops(self, length: float) -> float:
        """Forward attention-score FLOPs over one sequence of `length` (context plus mask) tokens."""
        return bidirectional_attention_flops(self.dim, self.depth, length)


class ProbeBase(Strict):
    """What every probe kind answers: its parameters and a training step's FLOPs on a frozen ViT's tokens, the
    features it reads (`pooled`: the mean of the tokens, else the tokens themselves), whether it trains
    (`trains`), its largest repeated block and how many of them (the plan's memory estimate), and what it asks
    of its stage (`check`)."""

    kind: str
    # reads the mean of the encoder's tokens (so a cache holds one vector a clip), else the tokens
    pooled: ClassVar[bool] = True
    trains: ClassVar[bool] = True  # has parameters an optimizer updates
    needs_labelled: ClassVar[bool] = False  # only defined on a fixed labelled set (`labelled` or `per_class`)
    reads_labelled: ClassVar[bool] = False  # its forward reads the labelled set's features (kNN)
    # the stage's default optimizer (AdamW fields) when the spec gives none
    OPTIM: ClassVar[dict[str, Any]] = {"lr": 1e-3, "weight_decay": 0.01}

    def params(self, in_dim: int, classes: int | None = None) -> int:
        """Exact parameters of the built module on `in_dim`-wide tokens."""
        raise NotImplementedError

    def train_flops(
        self, encoder: ViT, clips: int, classes: int | None = None, encode: bool = True
    ) -> StepFlops:
        """One training step on `clips` clips; `encode`: the frozen encoder runs on them (2·N·D and its
        attention), else their features come from a cache."""
        raise NotImplementedError

    def blocks(self, in_dim: int) -> tuple[int, int]:
        """(repeated blocks, parameters of one): what FSDP gathers at a time and the activations it keeps."""
        return 0, 0

    def validation(self, labelled: int) -> int:
        """Clips of a labelled set of `labelled` that the probe holds out of training (none by default)."""
        return 0

    def check(self, stage: Any, p: Problems) -> None:
        """Record what in its probe stage this probe cannot work with (at the stage's dotted fields)."""


def encoder_flops(encoder: ViT, clips: int) -> StepFlops:
    """The frozen encoder's forward on `clips` whole clips: 2·N·D and its attention."""
    return StepFlops(
        frozen_2nd=2.0 * encoder.params() * clips * encoder.tokens,
        attention=clips * encoder.attention_flops(encoder.tokens),
    )


class AttentiveProbe(ProbeBase):
    """V-JEPA 2 attentive probe: self-attention blocks, cross-attention from one learned query, linear."""

    pooled: ClassVar[bool] = False

    kind: Literal["attentive_probe"] = Field(
        "attentive_probe", description="Attentive classifier on frozen encoder tokens."
    )
    depth: Depth = Field(3, ge=0, description="Self-attention blocks before the cross-attention block.")
    heads: Heads = Field(16, gt=0, description="Attention heads; must divide the encoder's width.")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width as a multiple of the encoder width.")
    classes: int | None = Field(
        None, ge=2, description="Number of classes (width of the linear head); default: the data's classes."
    )
    norm_eps: float = Field(
        1e-5, gt=0, description="Epsilon of the LayerNorms (V-JEPA 2's pooler uses torch's default)."
    )
    init_std: float = Field(0.02, gt=0, description="Std of the truncated-normal init (and the query).")

    def params(self, in_dim: int, classes: int | None = None) -> int:
        """Exact parameters of `engine.models.probe` on `in_dim`-wide tokens: query token, `depth` self-attention
        blocks, cross-attention block, linear head (classes: `probe_classes`)."""
        D, h, c = in_dim, int(in_dim * self.mlp_ratio), probe_classes(self, classes)
        cross = 2 * 2 * D + (D * D + D) + (2 * D * D + 2 * D) + (D * h + h + h * D + D)
        return D + self.depth * vit_block_params(D, h) + cross + D * c + c

    def train_flops(
        self, encoder: ViT, clips: int, classes: int | None = None, encode: bool = True
    ) -> StepFlops:
        """One step on `clips` whole clips: the frozen encoder forward (2·N·D and its attention, unless cached),
        the probe trained on all its tokens (6·N·D and 3x the attention of its self-attention blocks)."""
        tokens = clips * encoder.tokens
        enc = encoder_flops(encoder, clips) if encode else StepFlops()
        return StepFlops(
            six_nd=6.0 * self.params(encoder.dim, classes) * tokens,
            frozen_2nd=enc.frozen_2nd,
            attention=enc.attention
            + clips * 3 * bidirectional_attention_flops(encoder.dim, self.depth, encoder.tokens),
        )

    def blocks(self, in_dim: int) -> tuple[int, int]:
        """`depth` self-attention blocks of the encoder's width."""
        return self.depth, vit_block_params(in_dim, int(in_dim * self.mlp_ratio))


WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


class LinearProbe(ProbeBase):
    """Linear classifiers on the mean of the frozen tokens, standardised per feature with the labelled training
    clips' statistics; one head per weight decay, trained together, and the head with the best top-1 on the
    labelled validation split is the one evaluated."""

    needs_labelled: ClassVar[bool] = True
    OPTIM: ClassVar[dict[str, Any]] = {"lr": 1e-3, "weight_decay": 0.0, "grad_clip": None}  # L2 terms instead

    kind: Literal["linear_probe"] = Field(
        "linear_probe", description="Linear classifiers on mean-pooled, standardised frozen tokens."
    )
    weight_decays: list[float] = Field(
        default_factory=lambda: list(WEIGHT_DECAYS),
        min_length=1,
        description="One head per value, trained in parallel with loss CE + wd * ||W||^2 / 2; the head with "
        "the best validation top-1 is reported (ties: the larger weight decay).",
    )
    val_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the labelled set held out of training as the validation split that picks the head.",
    )
    classes: int | None = Field(
        None, ge=2, description="Number of classes (width of each head); default: the data's classes."
    )
    norm_eps: float = Field(
        1e-5,
        gt=0,
        description="Added to each feature's standard deviation when the features are standardised.",
    )
    init_std: float = Field(0.02, gt=0, description="Std of the truncated-normal init of the head weights.")

    @model_validator(mode="after")
    def _distinct_decays(self) -> LinearProbe:
        bad = [w for w in self.weight_decays if w < 0]
        if bad:
            raise spec_error("weight_decays", f"weight decays {bad} are negative; give values >= 0")
        if len(set(self.weight_decays)) != len(self.weight_decays):
            raise spec_error("weight_decays", f"{self.weight_decays} repeats a value; list each once")
        return self

    def params(self, in_dim: int, classes: int | None = None) -> int:
        """One weight matrix and bias per head (the standardisation's statistics are buffers)."""
        return len(self.weight_decays) * (
            in_dim * probe_classes(self, classes) + probe_classes(self, classes)
        )

    def train_flops(
        self, encoder: ViT, clips: int, classes: int | None = None, encode: bool = True
    ) -> StepFlops:
        """The frozen encoder (unless cached) and the heads trained on one pooled vector per clip."""
        enc = encoder_flops(encoder, clips) if encode else StepFlops()
        six_nd = 6.0 * self.params(encoder.dim, classes) * clips
        return StepFlops(six_nd=six_nd, frozen_2nd=enc.frozen_2nd, attention=enc.attention)

    def validation(self, labelled: int) -> int:
        """Clips of a labelled set of `labelled` held out as the validation split: round(val_fraction * N)."""
        return round(self.val_fraction * labelled)

    def check(self, stage: Any, p: Problems) -> None:
        """The validation split and the training part of the labelled set are both non-empty; the explicit
        L2 terms are the only regularisation and nothing couples the heads (no decoupled weight decay, no
        gradient clipping over all heads)."""
        n = stage.labelled_size
        if n is not None:
            val = self.validation(n)
            if val < 1 or val > n - 1:
                p.add(
                    "probe.val_fraction",
                    f"{self.val_fraction} of {n} labelled clips holds out {val}; the validation split and the "
                    f"training clips must both be non-empty: pick val_fraction in [{0.5 / n:.3g}, "
                    f"{1 - 0.5 / n:.3g}) or label more clips",
                )
        optim = stage.optim
        if optim.weight_decay or getattr(optim, "weight_decay_end", None):
            p.add(
                "optim.weight_decay",
                "a linear probe's heads are regularised by probe.weight_decays (an explicit L2 term each); "
                "set optim.weight_decay: 0 and remove weight_decay_end",
            )
        if optim.grad_clip is not None:
            p.add(
                "optim.grad_clip",
                "clipping the norm over all heads would couple the linear probe's heads; remove grad_clip",
            )


class KnnProbe(ProbeBase):
    """k nearest neighbours in the labelled set by cosine similarity of L2-normalised mean-pooled tokens, votes
    weighted by (1 + similarity) / 2; nothing is trained."""

    trains: ClassVar[bool] = False
    needs_labelled: ClassVar[bool] = True
    reads_labelled: ClassVar[bool] = True

    kind: Literal["knn_probe"] = Field(
        "knn_probe", description="k-nearest-neighbour classifier against the labelled set (no training)."
    )
    k: int = Field(20, gt=0, description="Neighbours that vote (all of the labelled set when it is smaller).")
    classes: int | None = Field(
        None, ge=2, description="Number of classes voted on; default: the data's classes."
    )

    def params(self, in_dim: int, classes: int | None = None) -> int:
        """None: the labelled set's features are the model."""
        return 0

    def train_flops(
        self, encoder: ViT, clips: int, classes: int | None = None, encode: bool = True
    ) -> StepFlops:
        """Nothing is trained: only the encoder's forward on the clips (unless cached)."""
        return encoder_flops(encoder, clips) if encode else StepFlops()


Probe = kinded(
    AttentiveProbe,
    LinearProbe,
    KnnProbe,
    default="attentive_probe",
    description="The probe: attentive_probe | linear_probe | knn_probe (default attentive_probe).",
)


def probe_classes(cfg: ProbeBase, classes: int | None = None) -> int:
    """The probe's number of classes: cfg.classes if set, else `classes` (the data's); ValueError if neither."""
    if cfg.classes is not None:
        return cfg.classes
    if classes is None:
        raise ValueError("the probe needs a number of classes: set probe.classes or pass the data's classes")
    return classes


# ----------------------------------------------------------------------------- two-layer MLP (random features)


class MLP(Strict):
    """A two-layer ReLU network on ±1 inputs, f(x) = a·ReLU(Wx + b) + c (`standard`, the default) or
    a·ReLU(Wx + b) / sqrt(width) + c (`ntk`): with its first layer frozen at initialisation it is a
    random-features model (docs/papers/random_features.md).

    Initialisation: W ~ N(0, 1/inputs), b ~ N(0, 1), c = 0, and a ~ N(0, 1/width) (`standard`) or N(0, 1)
    (`ntk`): the same function at initialisation. Under SGD at one learning rate they differ: `standard` is
    `ntk` with the readout's learning rate multiplied by the width (at lr 0.05, ntk's frozen readout barely
    moves in thousands of steps). The bias lets odd parities be represented (without it ReLU(w·x) spans only
    linear and even functions of x).
    """

    kind: Literal["mlp"] = Field("mlp", description="Two-layer ReLU network (random features when frozen).")
    width: Hidden = Field(512, gt=0, description="Hidden units M.")
    inputs: int | None = Field(
        None, gt=0, description="Input dimension; must equal the data's n (default: taken from the data)."
    )
    train_first_layer: bool = Field(
        True,
        description="Train W and b with the readout; false freezes them at initialisation (random features: "
        "only a and c are trained).",
    )
    parametrization: Literal["standard", "ntk"] = Field(
        "standard",
        description="standard: f = a·ReLU(Wx + b) + c, a ~ N(0, 1/width) (the readout's effective learning rate "
        "grows with the width); ntk: the readout scaled by 1/sqrt(width), a ~ N(0, 1) (a step's change of f does "
        "not grow with the width). The same function at initialisation.",
    )

    @property
    def vocab_size(self) -> None:
        """An MLP reads ±1 vectors, not token ids: it has no vocabulary (the stage falls back to the data's)."""
        return None

    @property
    def context(self) -> None:
        """No position table."""
        return None

    def check(self, stage: Any, p: Problems) -> None:
        """The stage's data is biased_parity and `inputs` equals its n (filled from it when unset)."""
        data = stage.data
        if getattr(data, "kind", None) != "biased_parity":
            p.add(
                "data.kind",
                f"an mlp reads ±1 vectors, which biased_parity makes, not {data.kind!r}; use data kind "
                "biased_parity or model kind transformer",
            )
            return
        if self.inputs is None:
            self.inputs = data.n
        elif self.inputs != data.n:
            p.add(
                "model.inputs",
                f"{self.inputs} inputs but the data has n={data.n} bits; set inputs: {data.n} or leave it unset",
            )

    def _inputs(self) -> int:
        if self.inputs is None:
            raise ValueError(
                "the mlp's inputs are unset; validate it within its stage (which fills them) first"
            )
        return self.inputs

    def weight_shapes(self, vocab_size: int | None = None) -> dict[str, Any]:
        """What fixes the names and shapes of this model's weights."""
        return {"kind": self.kind, "width": self.width, "inputs": self.inputs}  # parametrization: same shapes

    def first_params(self) -> int:
        """W and b."""
        return _linear(self._inputs(), self.width, True)

    def readout_params(self) -> int:
        """a and c."""
        return self.width + 1

    def param_count(self, vocab_size: int | None = None) -> ParamCount:
        """Exact counts of the built module: one block (W, b) and the root readout (a, c); a frozen first
        layer is `frozen` and not in `total`."""
        first, readout = self.first_params(), self.readout_params()
        trained = first + readout if self.train_first_layer else readout
        return ParamCount(
            total=trained,
            active=trained,
            embedding=0,
            largest_block=first,
            root=readout,
            frozen=0 if self.train_first_layer else first,
        )

    def train_flops(self, examples: float) -> StepFlops:
        """One step over `examples` inputs: 6·N·D of the trained weights (one MAC per weight and example),
        2·N·D of a frozen first layer (forward only)."""
        first, readout = self.first_params(), self.readout_params()
        if self.train_first_layer:
            return StepFlops(six_nd=6.0 * (first + readout) * examples)
        return StepFlops(six_nd=6.0 * readout * examples, frozen_2nd=2.0 * first * examples)


Model = kinded(
    Transformer,
    ViT,
    MLP,
    default="transformer",
    description="The model of a stage: transformer | vit | mlp (default transformer).",
)
