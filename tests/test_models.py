"""Tests of the transformer: exact parameter counts, causality, positions, overfitting, checkpoint wrapping."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

from engine.models.layers import Attention, apply_rope, rope_cos_sin
from engine.models.transformer import Transformer, build
from schemas.models import Transformer as TransformerConfig

V = 100


pytestmark = pytest.mark.usefixtures("one_thread")


def model(seed: int = 0, vocab: int = V, **cfg) -> Transformer:
    """A small seeded transformer; config fields override dim=64, depth=2, heads=4."""
    torch.manual_seed(seed)
    return build(TransformerConfig(**{"dim": 64, "depth": 2, "heads": 4, **cfg}), vocab)


def n_params(m: torch.nn.Module) -> int:
    """Parameters counted once each (tied weights once)."""
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------- parameter counts

D, EMB = 64, V * 64  # width, one embedding table (also the untied head)

PARAM_CASES = {
    # rmsnorm (D) x2 per block + attention 4*D*D + gelu 2*D*4D; final norm D
    "dense_gelu": ({}, EMB + 2 * (2 * D + 4 * D * D + 2 * D * 256) + D + EMB),
    # swiglu default hidden: 64 * ceil((8*64//3) / 64) = 192, three matrices
    "swiglu": (
        {"ffn": {"kind": "dense", "activation": "swiglu"}},
        EMB + 2 * (2 * D + 4 * D * D + 3 * D * 192) + D + EMB,
    ),
    # 8 heads of 8, 2 kv heads: wk, wv are D x 16
    "gqa": ({"heads": 8, "kv_heads": 2}, EMB + 2 * (2 * D + 2 * D * D + 2 * D * 16 + 2 * D * 256) + D + EMB),
    "learned_positions": (
        {"position": {"kind": "learned", "max_len": 32}},
        EMB + 32 * D + 2 * (2 * D + 4 * D * D + 2 * D * 256) + D + EMB,
    ),
    "coupled_learned": (
        {"position": {"kind": "coupled", "encoding": "learned", "max_position": 50}},
        EMB + 50 * D + 2 * (2 * D + 4 * D * D + 2 * D * 256) + D + EMB,
    ),
    "tied": ({"tie_embeddings": True}, EMB + 2 * (2 * D + 4 * D * D + 2 * D * 256) + D),
    # router D*4 (no bias) + 4 swiglu experts of hidden 32 (never biased, even with bias: true);
    # attention biases: wq, wk, wv, wo each + D
    "moe_bias": (
        {
            "bias": True,
            "ffn": {"kind": "moe", "experts": 4, "top_k": 2, "hidden": 32, "activation": "swiglu"},
        },
        EMB + 2 * (2 * D + 4 * (D * D + D) + D * 4 + 4 * 3 * D * 32) + D + EMB,
    ),
    # layernorm: weight + bias (2D) per norm; gelu linears with biases
    "layernorm_bias": (
        {"norm": "layernorm", "bias": True},
        EMB + 2 * (2 * 2 * D + 4 * (D * D + D) + (D * 256 + 256) + (256 * D + D)) + 2 * D + EMB,
    ),
}


@pytest.mark.parametrize("name", list(PARAM_CASES))
def test_parameter_count_matches_hand_count(name: str) -> None:
    """sum(p.numel()) equals the formula in the transformer docstring, computed by hand here."""
    cfg, expected = PARAM_CASES[name]
    assert n_params(model(**cfg)) == expected


def test_tied_head_uses_embedding() -> None:
    """With tie_embeddings the logits are norm(x) @ tok_emb.weight.T; no separate head exists."""
    m = model(tie_embeddings=True)
    assert m.lm_head is None
    final = []
    m.norm.register_forward_hook(lambda mod, args, out: final.append(out))
    logits, _ = m(torch.randint(0, V, (2, 4)))
    assert logits.shape == (2, 4, V)
    torch.testing.assert_close(logits, final[0] @ m.tok_emb.weight.T)


# ----------------------------------------------------------------------------- init


def test_init_is_deterministic_and_scaled() -> None:
    """Same seed, same weights; output projections get std/sqrt(2*depth); norms 1, biases 0."""
    a = model(seed=3, dim=256, depth=8, heads=4, bias=True, norm="layernorm")
    b = model(seed=3, dim=256, depth=8, heads=4, bias=True, norm="layernorm")
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    out_std = 0.02 / 4
    blk = a.blocks[0]
    assert blk.attn.wq.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert blk.attn.wo.weight.std().item() == pytest.approx(out_std, rel=0.05)
    assert blk.ffn.w1.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert blk.ffn.w2.weight.std().item() == pytest.approx(out_std, rel=0.05)
    assert torch.all(blk.attn.wq.bias == 0) and torch.all(blk.ffn.w2.bias == 0)
    assert torch.all(blk.norm1.weight == 1) and torch.all(blk.norm1.bias == 0)
    moe = model(dim=256, depth=8, ffn={"kind": "moe", "experts": 4, "hidden": 256}).blocks[0].ffn
    assert moe.w1.std().item() == pytest.approx(0.02, rel=0.05)
    assert moe.w2.std().item() == pytest.approx(out_std, rel=0.05)


# ----------------------------------------------------------------------------- forward behaviour


@pytest.mark.parametrize(
    "position",
    [{"kind": "rope"}, {"kind": "nope"}, {"kind": "learned", "max_len": 16}, {"kind": "coupled"}],
    ids=["rope", "nope", "learned", "coupled"],
)
def test_causal(position: dict) -> None:
    """Changing token t changes logits at t and leaves every earlier position unchanged."""
    m = model(position=position)
    tokens = torch.randint(0, V, (2, 12))
    positions = torch.arange(12).expand(2, 12)
    t = 7
    changed = tokens.clone()
    changed[:, t] = (changed[:, t] + 1) % V
    a, aux = m(tokens, positions)
    b, _ = m(changed, positions)
    assert a.shape == (2, 12, V) and aux["aux_loss"].item() == 0.0
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=1e-6, rtol=0)
    assert (a[:, t] - b[:, t]).abs().max() > 1e-4


def test_learned_positions_too_long_raise() -> None:
    """A sequence longer than max_len is a clear error, not an index error."""
    with pytest.raises(ValueError, match="max_len"):
        model(position={"kind": "learned", "max_len": 8})(torch.zeros(1, 9, dtype=torch.long))


def test_coupled_positions_required() -> None:
    """Coupled positions without ids is a clear error."""
    with pytest.raises(ValueError, match="positions"):
        model(position={"kind": "coupled"})(torch.zeros(1, 4, dtype=torch.long))


def test_rope_scores_depend_only_on_relative_position() -> None:
    """q.k after RoPE is invariant to shifting all ids by a constant, and changes with the ids."""
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 6, 16), torch.randn(2, 3, 6, 16)
    ids = torch.tensor([[0, 1, 2, 5, 9, 3], [4, 4, 0, 1, 2, 3]])

    def scores(pos: torch.Tensor) -> torch.Tensor:
        cos, sin = rope_cos_sin(pos, 16, 10000.0)
        return apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)

    torch.testing.assert_close(scores(ids), scores(ids + 37), atol=1e-4, rtol=1e-4)
    assert (scores(ids) - scores(ids.flip(-1))).abs().max() > 1e-2
    # position 0 is the identity rotation and norms are preserved
    cos, sin = rope_cos_sin(torch.arange(6), 16, 10000.0)
    torch.testing.assert_close(apply_rope(q, cos, sin)[:, :, 0], q[:, :, 0])
    torch.testing.assert_close(apply_rope(q, cos, sin).norm(dim=-1), q.norm(dim=-1))


def test_coupled_rope_uses_given_ids() -> None:
    """Coupled RoPE logits follow the given ids: a shift leaves them unchanged, a different order does not."""
    m = model(position={"kind": "coupled", "encoding": "rope"})
    tokens = torch.randint(0, V, (2, 10))
    ids = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]])
    a, _ = m(tokens, ids)
    torch.testing.assert_close(a, m(tokens, ids + 11)[0], atol=1e-4, rtol=1e-4)
    assert (a - m(tokens, torch.arange(10).expand(2, 10))[0]).abs().max() > 1e-3
    # the coupled learned table is indexed by the given ids too
    m = model(position={"kind": "coupled", "encoding": "learned", "max_position": 32})
    assert (m(tokens, ids)[0] - m(tokens, ids + 11)[0]).abs().max() > 1e-3


def test_gqa_equals_repeated_kv_heads() -> None:
    """kv_heads=2 attention equals full attention whose k/v heads repeat each kv head heads/kv times."""
    torch.manual_seed(0)
    gqa, full = Attention(32, heads=4, kv_heads=2, causal=True), Attention(32, heads=4, causal=True)
    hd = 8
    with torch.no_grad():
        full.wq.weight.copy_(gqa.wq.weight)
        full.wo.weight.copy_(gqa.wo.weight)
        for name in ("wk", "wv"):  # kv head j serves query heads 2j, 2j+1
            w = getattr(gqa, name).weight.view(2, hd, 32).repeat_interleave(2, dim=0).reshape(32, 32)
            getattr(full, name).weight.copy_(w)
    x = torch.randn(2, 5, 32)
    cos, sin = rope_cos_sin(torch.arange(5), hd, 10000.0)
    torch.testing.assert_close(gqa(x, cos=cos, sin=sin), full(x, cos=cos, sin=sin), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cross", [False, True])
def test_attention_layouts_compute_the_same(cross: bool) -> None:
    """The fused 'vjepa' projections (qkv or q + kv) equal the 'llama' ones (wq, wk, wv) holding their slices."""
    torch.manual_seed(0)
    fused = Attention(32, heads=4, layout="vjepa", cross=cross, bias=True)
    split = Attention(32, heads=4, layout="llama", cross=cross, bias=True)
    with torch.no_grad():
        if cross:  # q rows, then k and v rows
            w, b = torch.cat([fused.q.weight, fused.kv.weight]), torch.cat([fused.q.bias, fused.kv.bias])
        else:
            w, b = fused.qkv.weight, fused.qkv.bias
        for lin, wi, bi in zip((split.wq, split.wk, split.wv), w.chunk(3), b.chunk(3), strict=True):
            lin.weight.copy_(wi)
            lin.bias.copy_(bi)
        split.wo.load_state_dict(fused.proj.state_dict())
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 7, 32) if cross else None
    torch.testing.assert_close(split(x, ctx), fused(x, ctx), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="cross-attention takes ctx"):
        fused(x, None if cross else x)


def test_moe_aux_outputs() -> None:
    """MoE models report per-layer-averaged lb/z losses and load, combined into aux_loss by the coefficients."""
    ffn = {"kind": "moe", "experts": 4, "top_k": 2, "hidden": 32, "load_balance": 0.5, "z_loss": 0.25}
    m = model(ffn=ffn)
    _, aux = m(torch.randint(0, V, (2, 8)))
    assert set(aux) == {"aux_loss", "moe/lb_loss", "moe/z_loss", "moe/load"}
    assert aux["moe/load"].shape == (4,) and aux["moe/load"].sum().item() == pytest.approx(1.0)
    assert aux["moe/lb_loss"].item() >= 1.0 - 1e-6
    torch.testing.assert_close(aux["aux_loss"], 0.5 * aux["moe/lb_loss"] + 0.25 * aux["moe/z_loss"])


# ----------------------------------------------------------------------------- training behaviour


@pytest.mark.parametrize("ffn", [{"kind": "dense"}, {"kind": "moe", "experts": 4, "top_k": 2, "hidden": 64}])
def test_overfits_a_fixed_batch(ffn: dict) -> None:
    """A tiny model memorises 4 sequences (distinct first tokens) within 100 AdamW steps."""
    torch.manual_seed(0)
    m = model(dim=32, depth=2, heads=2, vocab=16, ffn=ffn)
    tokens = torch.randint(0, 16, (4, 16))
    tokens[:, 0] = torch.arange(4)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(100):
        logits, aux = m(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 16), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        (loss + aux["aux_loss"]).backward()
        opt.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("ffn", [{"kind": "dense"}, {"kind": "moe", "experts": 4, "top_k": 2, "hidden": 32}])
def test_checkpoint_wrapped_blocks_match(ffn: dict) -> None:
    """Blocks replaced by checkpoint_wrapper (non-reentrant) give the same outputs, aux and gradients."""
    plain = model(ffn=ffn)
    wrapped = copy.deepcopy(plain)
    for i, block in enumerate(wrapped.blocks):
        wrapped.blocks[i] = checkpoint_wrapper(block)
    tokens = torch.randint(0, V, (2, 8))
    outs = []
    for m in (plain, wrapped):
        logits, aux = m(tokens)
        (logits.square().mean() + aux["aux_loss"]).backward()
        outs.append((logits, aux, [p.grad for p in m.parameters()]))
    (la, aa, ga), (lb, ab, gb) = outs
    torch.testing.assert_close(la, lb)
    for key in aa:
        torch.testing.assert_close(aa[key], ab[key])
    assert len(ga) == len(gb)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b)
    # init_weights still finds the wrapped layers
    torch.manual_seed(1)
    wrapped.init_weights()
    torch.manual_seed(1)
    plain.init_weights()
    for a, b in zip(plain.parameters(), wrapped.parameters(), strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- weight shapes from the config

TRANSFORMER_VARIANTS = [
    {},
    {"dim": 96, "heads": 4},
    {"depth": 3},
    {"heads": 8},  # same shapes: q, k, v are dim x dim whatever the head count
    {"kv_heads": 2},
    {"norm": "layernorm"},
    {"bias": True},
    {"tie_embeddings": True},
    {"position": {"kind": "learned", "max_len": 64}},
    {"position": {"kind": "learned", "max_len": 96}},
    {"position": {"kind": "rope", "base": 500.0}},  # same shapes: RoPE has no weights
    {"position": {"kind": "nope"}},
    {"position": {"kind": "coupled", "encoding": "learned", "max_position": 40}},
    {"ffn": {"hidden": 128}},
    {"ffn": {"activation": "swiglu"}},
    {"ffn": {"kind": "moe", "experts": 4, "top_k": 2, "hidden": 32}},
    {"ffn": {"kind": "moe", "experts": 4, "top_k": 1, "hidden": 32}},  # same shapes: routing only
    {"ffn": {"kind": "moe", "experts": 8, "top_k": 2, "hidden": 32}},
    {"init_std": 0.05},
]


def shapes(m: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a module's state dict."""
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


@pytest.mark.parametrize("vocab", [V, V + 4])
def test_weight_shapes_of_a_transformer_config_predict_what_loads(vocab: int) -> None:
    """`Transformer.weight_shapes` (pure Python, used by `init` at validation) agrees with the built models:
    equal exactly when the state dicts have the same names and shapes."""
    configs = [TransformerConfig(**{"dim": 64, "depth": 2, "heads": 4, **v}) for v in TRANSFORMER_VARIANTS]
    built = [shapes(build(c, V)) for c in configs]
    predicted = [c.weight_shapes(V) for c in configs]
    other = shapes(build(configs[0], vocab))
    assert (configs[0].weight_shapes(vocab) == predicted[0]) == (other == built[0])
    for i in range(len(configs)):
        for j in range(len(configs)):
            assert (predicted[i] == predicted[j]) == (built[i] == built[j]), (
                TRANSFORMER_VARIANTS[i],
                TRANSFORMER_VARIANTS[j],
            )


def test_weight_shapes_of_a_vit_config_predict_what_loads() -> None:
    from engine.models.vit import VisionTransformer
    from schemas.models import ViT

    base = {"dim": 48, "depth": 2, "heads": 2, "mlp": 96, "patch": 8, "frames": 4, "resolution": 32}
    variants = [
        {},
        {"dim": 60},
        {"depth": 3},
        {"heads": 4},
        {"mlp": 128},
        {"patch": 16},
        {"tubelet": 1},
        {"channels": 1},
        {"frames": 8},  # same shapes: 3D RoPE has no weights
        {"resolution": 64},
        {"position": "sincos"},  # a fixed, unsaved table
        {"qkv_bias": False},
    ]
    configs = [ViT(**{**base, **v}) for v in variants]
    built = [shapes(VisionTransformer(c)) for c in configs]
    predicted = [c.weight_shapes() for c in configs]
    for i in range(len(configs)):
        for j in range(len(configs)):
            assert (predicted[i] == predicted[j]) == (built[i] == built[j]), (variants[i], variants[j])
