"""Tests of the video ViT, the JEPA predictor and the attentive probe: counts, 3D RoPE, masking, wrapping."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

from engine.models.layers import apply_rope3d, grid_coords, rope3d_cos_sin, sincos3d_table
from engine.models.predictor import Predictor
from engine.models.probe import AttentiveProbe
from engine.models.vit import VisionTransformer
from schemas.models import AttentiveProbe as ProbeConfig
from schemas.models import Predictor as PredictorConfig
from schemas.models import ViT

pytestmark = pytest.mark.usefixtures("one_thread")

# A tiny clip: 4 frames of 16x16 px, tubelet 2, patch 4 -> grid (2, 4, 4), 32 tokens; head dim 16 -> 4/4/4 + 4.
TINY = {"dim": 32, "depth": 2, "heads": 2, "mlp": 64, "patch": 4, "tubelet": 2, "frames": 4, "resolution": 16}


def n_params(m: nn.Module) -> int:
    """Parameters of a module, each counted once."""
    return sum(p.numel() for p in m.parameters())


def vit(seed: int = 0, **over) -> VisionTransformer:
    """A seeded tiny video ViT; fields override TINY."""
    torch.manual_seed(seed)
    return VisionTransformer(ViT(**{**TINY, **over}))


def clip(cfg: ViT, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """A random clip [B, C, T, H, W] of a config's shape."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.channels, cfg.frames, cfg.resolution, cfg.resolution, generator=g)


def random_keep(batch: int, n: int, k: int, seed: int = 2) -> torch.Tensor:
    """k distinct token indices per clip, in random order: [batch, k]."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(batch)])


# ----------------------------------------------------------------------------- configs

PAPER_VIT = {"B": 86e6, "L": 303e6, "H": 632e6, "g": 1.012e9, "G": 1.843e9}
# SALT's predictor regresses the teacher: ViT-B teaches B, ViT-L teaches L, H, g and G.
PAPER_PREDICTOR = {"B": 21.88e6, "L": 22.08e6, "H": 22.18e6, "g": 22.23e6, "G": 22.32e6}
TEACHER_WIDTH = {"B": 768, "L": 1024, "H": 1024, "g": 1024, "G": 1024}


def test_preset_fills_unset_fields_and_given_fields_override() -> None:
    """`size` fills dim/depth/heads/mlp; a field given next to it wins; without size the small defaults."""
    assert (ViT(size="g").dim, ViT(size="g").depth, ViT(size="g").heads, ViT(size="g").mlp) == (
        1408,
        40,
        16,
        6144,
    )
    cfg = ViT(size="L", depth=2, mlp=100)
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.mlp) == (1024, 2, 16, 100)
    assert (ViT().dim, ViT().depth, ViT().heads, ViT().mlp) == (192, 6, 3, 768)
    cfg = ViT()
    assert cfg.grid == (8, 14, 14) and cfg.tokens == 1568 and cfg.patch_dim == 2 * 16 * 16 * 3
    assert cfg.head_dim == 64


def test_vit_cross_field_rules_report_every_problem() -> None:
    """heads | dim, patch | resolution, tubelet | frames are all reported at once with a fix."""
    with pytest.raises(ValidationError) as err:
        ViT(dim=100, heads=3, resolution=100, frames=15)
    problems = err.value.errors()[0]["ctx"]["problems"]
    assert [f for f, _ in problems] == ["heads", "resolution", "frames"]
    assert "does not divide dim=100" in problems[0][1]
    with pytest.raises(ValidationError, match="head dim of at least 6"):
        ViT(dim=20, heads=4)  # head dim 5: no rotated pair per axis
    ViT(dim=20, heads=4, position="sincos")  # fine without RoPE
    with pytest.raises(ValidationError, match="size"):
        ViT(size="XL")
    with pytest.raises(ValidationError, match="does not divide dim=384"):
        PredictorConfig(heads=5)
    with pytest.raises(ValidationError):
        ProbeConfig(classes=1)


# ----------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("size", list(PAPER_VIT))
def test_vit_preset_parameter_count(size: str) -> None:
    """Each preset built on the meta device has the pure-Python count, within 1% of the paper's."""
    cfg = ViT(size=size)
    with torch.device("meta"):
        model = VisionTransformer(cfg)
    n = n_params(model)
    assert n == cfg.params()
    assert abs(n / PAPER_VIT[size] - 1) < 0.01, n


@pytest.mark.parametrize("size", list(PAPER_PREDICTOR))
def test_predictor_parameter_count(size: str) -> None:
    """The paper's predictor for each student (out_dim = its teacher's width): pure-Python count, within 1%."""
    enc, cfg = ViT(size=size), PredictorConfig()
    with torch.device("meta"):
        model = Predictor(cfg, enc.dim, TEACHER_WIDTH[size], enc.grid)
    n = n_params(model)
    assert n == cfg.params(enc.dim, TEACHER_WIDTH[size])
    assert abs(n / PAPER_PREDICTOR[size] - 1) < 0.01, n
    assert int(n / 1e4) / 100 == PAPER_PREDICTOR[size] / 1e6  # the paper's figures are truncated, not rounded


@pytest.mark.parametrize(
    "over", [{}, {"qkv_bias": False}, {"position": "sincos"}, {"channels": 1, "patch": 8, "tubelet": 1}]
)
def test_vit_count_matches_module(over: dict) -> None:
    """The pure-Python count follows the module for variants (no qkv bias, sin-cos buffer, other patches)."""
    model = vit(**over)
    assert n_params(model) == model.cfg.params()


@pytest.mark.parametrize("over", [{"depth": 0}, {"depth": 3, "mlp_ratio": 2.5, "heads": 4}])
def test_probe_count_matches_module(over: dict) -> None:
    """The probe's pure-Python count equals its module's."""
    cfg = ProbeConfig(**{"classes": 7, "heads": 2, **over})
    assert n_params(AttentiveProbe(cfg, 40)) == cfg.params(40)


# ----------------------------------------------------------------------------- encoder


def test_vit_output_shape_and_token_order() -> None:
    """[B, C, T, H, W] -> [B, N, dim]; tokens are flattened in (t, h, w) order."""
    model = vit()
    cfg = model.cfg
    assert model(clip(cfg)).shape == (2, cfg.tokens, cfg.dim)
    # light up one tubelet at grid position (1, 2, 3): only token (1 * 4 + 2) * 4 + 3 = 27 moves off the bias
    video = torch.zeros(1, cfg.channels, cfg.frames, cfg.resolution, cfg.resolution)
    video[:, :, 2:4, 8:12, 12:16] = 1.0
    moved = (model.embed(video) - model.patch_embed.proj.bias).abs().sum(-1)[0]  # [N]
    assert moved.nonzero().flatten().tolist() == [27]
    idx = torch.tensor([27])
    assert [c.item() for c in grid_coords(idx, cfg.grid)] == [1, 2, 3]


def test_vit_paper_grid_has_1568_tokens() -> None:
    """16 frames at 224 px with tubelet 2 and patch 16 make 8 x 14 x 14 = 1568 tokens (tiny width)."""
    torch.manual_seed(0)
    cfg = ViT(dim=12, depth=1, heads=2, mlp=16)
    out = VisionTransformer(cfg)(clip(cfg, batch=1))
    assert cfg.grid == (8, 14, 14) and out.shape == (1, 1568, 12)


def test_vit_rejects_clips_that_do_not_tile() -> None:
    """A clip whose frames or pixels do not tile into tubelets is a clear error."""
    model = vit()
    with pytest.raises(ValueError, match="does not tile"):
        model(torch.randn(1, 3, 5, 16, 16))
    with pytest.raises(ValueError, match=r"clip \[B, 3"):
        model(torch.randn(1, 1, 4, 16, 16))
    with pytest.raises(ValueError, match="keep must be"):
        model(torch.randn(2, 3, 4, 16, 16), keep=torch.arange(5))


@pytest.mark.parametrize("position", ["rope", "sincos"])
def test_context_subset_enters_blocks_as_gathered_rows(position: str) -> None:
    """With `keep`, the first block sees exactly the full clip's embedded rows at the kept indices, [B, K, D]."""
    model = vit(position=position)
    video, keep = clip(model.cfg), random_keep(2, model.cfg.tokens, 9)
    seen: list[tuple] = []
    model.blocks[0].register_forward_pre_hook(lambda _, args: seen.append(args))
    model(video)
    model(video, keep=keep)
    (x_full, cos_full, sin_full), (x_keep, cos_keep, sin_keep) = seen
    assert x_keep.shape == (2, 9, model.cfg.dim)  # masked tokens never materialised in the blocks
    rows = x_full.gather(1, keep[..., None].expand(-1, -1, model.cfg.dim))
    torch.testing.assert_close(x_keep, rows, rtol=0, atol=0)
    if position == "rope":  # positions come from the indices, not from the order inside the subset
        assert cos_full.shape == (1, 1, model.cfg.tokens, 12) and cos_keep.shape == (2, 1, 9, 12)
        torch.testing.assert_close(cos_keep[:, 0], cos_full[0, 0][keep], rtol=0, atol=0)
        torch.testing.assert_close(sin_keep[:, 0], sin_full[0, 0][keep], rtol=0, atol=0)
    else:
        assert cos_full is None and cos_keep is None


@pytest.mark.parametrize("position", ["rope", "sincos"])
def test_keep_all_equals_full_clip(position: str) -> None:
    """forward(video, keep=every index in order) equals forward(video) exactly."""
    model = vit(position=position)
    video = clip(model.cfg)
    keep = torch.arange(model.cfg.tokens).expand(2, -1)
    assert torch.equal(model(video, keep=keep), model(video))


def test_subset_is_permutation_equivariant_and_per_clip() -> None:
    """Reordering `keep` reorders the output; each clip's subset is its own; a subset sees less context."""
    model = vit()
    video, keep = clip(model.cfg), random_keep(2, model.cfg.tokens, 11)
    out = model(video, keep=keep)
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model(video, keep=keep[:, perm]), out[:, perm])
    torch.testing.assert_close(model(video[1:], keep=keep[1:]), out[1:])
    full_rows = model(video).gather(1, keep[..., None].expand(-1, -1, model.cfg.dim))
    assert not torch.allclose(out, full_rows, atol=1e-3)  # attention over the subset only


@pytest.mark.parametrize("position", ["rope", "sincos"])
def test_list_of_keeps_embeds_once_and_equals_one_call_per_keep(position: str) -> None:
    """forward(video, keep=[k1, k2]) runs the patch embedding once and gives the outputs, the loss and the
    gradients of forward(video, keep=k1) and forward(video, keep=k2) called apart (to 1e-6; in float64, where
    the two only differ in the order the patch embedding's gradient is summed)."""
    model = vit(position=position).double()
    video = clip(model.cfg).double()
    keeps = [random_keep(2, model.cfg.tokens, 9, seed=2), random_keep(2, model.cfg.tokens, 20, seed=3)]
    g = torch.Generator().manual_seed(4)
    weights = [torch.randn(2, k.shape[1], model.cfg.dim, generator=g, dtype=torch.float64) for k in keeps]

    def loss_and_grads(outputs: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = sum((o * w).sum() for o, w in zip(outputs, weights, strict=True))
        model.zero_grad(set_to_none=True)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    embeds = []
    model.patch_embed.register_forward_hook(lambda *_: embeds.append(1))
    apart = [model(video, keep=k) for k in keeps]
    assert len(embeds) == 2
    together = model(video, keep=keeps)
    assert len(embeds) == 3 and isinstance(together, list)
    for a, b in zip(apart, together, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    loss_apart, grads_apart = loss_and_grads(apart)
    loss_together, grads_together = loss_and_grads(together)
    torch.testing.assert_close(loss_together, loss_apart, rtol=1e-6, atol=1e-6)
    assert grads_apart.keys() == grads_together.keys()
    for name in grads_apart:
        torch.testing.assert_close(grads_together[name], grads_apart[name], rtol=1e-6, atol=1e-6, msg=name)


def test_empty_list_of_keeps_is_refused() -> None:
    """An empty list is a caller's mistake, not a request for the whole clip."""
    model = vit()
    with pytest.raises(ValueError, match="keep is an empty list"):
        model(clip(model.cfg), keep=[])


def test_sincos_positions_are_fixed_buffers() -> None:
    """Sin-cos positions are a non-persistent buffer of shape [N, dim]: no parameters, no state-dict entry."""
    model = vit(position="sincos")
    cfg = model.cfg
    assert model.pos_table.shape == (cfg.tokens, cfg.dim)
    assert not any("pos" in name for name, _ in model.named_parameters())
    assert "pos_table" not in model.state_dict()
    torch.testing.assert_close(model.pos_table, sincos3d_table(cfg.dim, cfg.grid), rtol=0, atol=0)
    # token (0, 0, 0): sin 0 and cos 1 on each axis; a = 2 * ceil(32 / 6) = 12 channels per axis, cut to 32
    expected = torch.tensor(([0.0] * 6 + [1.0] * 6) * 3)[:32]
    torch.testing.assert_close(model.pos_table[0], expected)
    assert len({tuple(r.tolist()) for r in model.pos_table}) == cfg.tokens  # every position distinct
    assert model(clip(cfg)).shape == (2, cfg.tokens, cfg.dim)
    with pytest.raises(ValueError, match="sin-cos positions are fixed"):
        model(torch.randn(1, 3, 4, 32, 32))
    assert vit()(torch.randn(1, 3, 4, 32, 32)).shape == (1, 2 * 8 * 8, cfg.dim)  # RoPE reads any grid


def test_init_rescales_output_projections_by_layer() -> None:
    """Trunc-normal(0.02) weights, zero biases, LayerNorm 1/0; block i's proj and fc2 are / sqrt(2 i)."""
    torch.manual_seed(0)
    model = VisionTransformer(ViT(dim=192, depth=4, heads=3, mlp=384, frames=2, resolution=32))
    b0, b3 = model.blocks[0], model.blocks[3]
    assert b0.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert b3.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.02)
    for block, i in ((b0, 1), (b3, 4)):
        assert block.attn.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * i), rel=0.03)
        assert block.mlp.fc2.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * i), rel=0.03)
    assert model.patch_embed.proj.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert all(m.bias.abs().sum() == 0 for m in model.modules() if isinstance(m, nn.Linear | nn.Conv3d))
    assert torch.equal(model.norm.weight, torch.ones(192)) and torch.equal(model.norm.bias, torch.zeros(192))


# ----------------------------------------------------------------------------- 3D RoPE


def rotated_logits(q: torch.Tensor, k: torch.Tensor, pq: torch.Tensor, pk: torch.Tensor) -> torch.Tensor:
    """q_i . k_j after 3D RoPE at (t, h, w) positions pq [Lq, 3] and pk [Lk, 3] on a 100^3 grid."""
    grid = (100, 100, 100)
    flat = lambda p: (p[:, 0] * 100 + p[:, 1]) * 100 + p[:, 2]  # noqa: E731
    cq, sq = rope3d_cos_sin(flat(pq), grid, q.shape[-1])
    ck, sk = rope3d_cos_sin(flat(pk), grid, k.shape[-1])
    return apply_rope3d(q, cq, sq) @ apply_rope3d(k, ck, sk).transpose(-1, -2)  # [1, H, Lq, Lk]


def test_rope3d_logits_depend_only_on_the_relative_offset() -> None:
    """Shifting every position by one 3D offset keeps q.k; changing any axis of the offset changes it."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 5, 64, generator=g), torch.randn(1, 2, 5, 64, generator=g)
    pq, pk = torch.randint(0, 40, (5, 3), generator=g), torch.randint(0, 40, (5, 3), generator=g)
    base = rotated_logits(q, k, pq, pk)
    shift = torch.tensor([7, 13, 29])
    torch.testing.assert_close(rotated_logits(q, k, pq + shift, pk + shift), base, rtol=1e-5, atol=1e-4)
    for axis in range(3):  # move the keys alone along one axis: a different relative offset
        step = torch.zeros(3, dtype=torch.long)
        step[axis] = 1
        assert (rotated_logits(q, k, pq, pk + step) - base).abs().max() > 1e-2


def test_rope3d_chunks_and_unrotated_channels() -> None:
    """hd 64 -> three 20-channel chunks by frame, row, column; the last 4 channels pass through untouched."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 3, 64, generator=g)
    idx = torch.tensor(
        [(3 * 5 + 2) * 6 + 4, 0, 1]
    )  # (t, h, w) = (3, 2, 4), origin, (0, 0, 1) on a 9x5x6 grid
    cos, sin = rope3d_cos_sin(idx, (9, 5, 6), 64)
    assert cos.shape == (1, 1, 3, 60)
    y = apply_rope3d(x, cos, sin)
    assert torch.equal(y[..., 60:], x[..., 60:])
    torch.testing.assert_close(y[..., 1, :], x[..., 1, :])  # position (0, 0, 0): identity
    # (0, 0, 1): only the column chunk (channels 40..59) turns
    torch.testing.assert_close(y[..., 2, :40], x[..., 2, :40])
    assert (y[..., 2, 40:60] - x[..., 2, 40:60]).abs().max() > 1e-2
    # first pair of each chunk turns by the axis index (frequency 1): angles 3, 2, 4
    for start, angle in ((0, 3.0), (20, 2.0), (40, 4.0)):
        a, b = x[..., 0, start], x[..., 0, start + 1]
        torch.testing.assert_close(y[..., 0, start], a * math.cos(angle) - b * math.sin(angle))
        torch.testing.assert_close(y[..., 0, start + 1], b * math.cos(angle) + a * math.sin(angle))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))  # rotations keep the norm


# ----------------------------------------------------------------------------- predictor


def predictor(seed: int = 0, **over) -> Predictor:
    """A seeded small predictor on the TINY grid reading 32-wide tokens and predicting 24-wide targets."""
    torch.manual_seed(seed)
    cfg = PredictorConfig(**{"dim": 48, "depth": 2, "heads": 4, "mlp": 96, **over})
    return Predictor(cfg, 32, 24, (2, 4, 4))


def test_predictor_shape_mask_tokens_and_gradients() -> None:
    """[B, Kt, out_dim]; mask tokens start at zero; mask_id picks which one receives the gradient."""
    model = predictor()
    g = torch.Generator().manual_seed(0)
    perm = torch.stack([torch.randperm(32, generator=g) for _ in range(3)])
    ctx_idx, tgt_idx = perm[:, :10], perm[:, 10:17]
    ctx = torch.randn(3, 10, 32, generator=g)
    assert torch.equal(model.mask_tokens, torch.zeros(2, 48))
    out = model(ctx, ctx_idx, tgt_idx, mask_id=1)
    assert out.shape == (3, 7, 24)
    out.square().sum().backward()
    grad = model.mask_tokens.grad
    assert grad[0].abs().sum() == 0 and grad[1].abs().sum() > 0
    assert model.embed.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="mask_id 2 out of range"):
        model(ctx, ctx_idx, tgt_idx, mask_id=2)


def test_predictor_uses_positions_not_order() -> None:
    """Targets at different positions get different predictions; permuting the context changes nothing."""
    model = predictor(init_std=0.3)  # sharp attention, so positions matter visibly
    with torch.no_grad():
        model.mask_tokens.normal_()
    g = torch.Generator().manual_seed(1)
    ctx, ctx_idx = torch.randn(1, 6, 32, generator=g), torch.arange(6)[None]
    tgt_idx = torch.tensor([[10, 20, 31]])
    out = model(ctx, ctx_idx, tgt_idx)
    assert (out[0, 0] - out[0, 1]).abs().max() > 1e-3  # same mask token, different positions
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(model(ctx[:, perm], ctx_idx[:, perm], tgt_idx), out)


# ----------------------------------------------------------------------------- probe


def test_probe_shape_pooling_and_query_gradient() -> None:
    """Logits [B, classes]; pooling without self-attention is order-free; the query token learns."""
    torch.manual_seed(0)
    probe = AttentiveProbe(ProbeConfig(depth=0, heads=4, classes=5), 32)
    tokens = torch.randn(3, 10, 32)
    logits = probe(tokens)
    assert logits.shape == (3, 5)
    perm = torch.randperm(10)
    torch.testing.assert_close(probe(tokens[:, perm]), logits)
    logits.logsumexp(-1).sum().backward()
    assert probe.query.grad is not None and probe.query.grad.abs().sum() > 0
    assert not hasattr(probe.cross.xattn, "proj")  # no output projection in the cross-attention
    deep = AttentiveProbe(ProbeConfig(depth=3, heads=4, classes=5), 32)
    assert len(deep.blocks) == 3 and deep(tokens).shape == (3, 5)
    with pytest.raises(ValueError, match="heads=16 does not divide the encoder width 40"):
        AttentiveProbe(ProbeConfig(classes=5), 40)


def test_probe_classes_come_from_the_config_or_the_data() -> None:
    """cfg.classes wins; without it the builder's `classes` (the data's) is used; with neither, a clear error."""
    cfg = ProbeConfig(depth=0, heads=4)
    assert AttentiveProbe(cfg, 32, classes=6)(torch.randn(1, 3, 32)).shape == (1, 6)
    assert cfg.params(32, classes=6) == n_params(AttentiveProbe(cfg, 32, classes=6))
    assert AttentiveProbe(ProbeConfig(depth=0, heads=4, classes=3), 32, classes=6).head.out_features == 3
    with pytest.raises(ValueError, match="needs a number of classes"):
        AttentiveProbe(cfg, 32)


# ----------------------------------------------------------------------------- activation checkpointing


def wrap_blocks(model: nn.Module) -> nn.Module:
    """Replace every entry of model.blocks by a checkpoint_wrapper around it, as the runtime does."""
    for i, block in enumerate(model.blocks):
        model.blocks[i] = checkpoint_wrapper(block)
    return model


def test_checkpoint_wrapped_blocks_give_the_same_outputs_and_gradients() -> None:
    """ViT (with keep), predictor and probe: same outputs and gradients with wrapped blocks."""
    video, keep = clip(ViT(**TINY)), random_keep(2, 32, 12)
    g = torch.Generator().manual_seed(5)
    ctx, ctx_idx, tgt_idx = torch.randn(2, 12, 32, generator=g), keep, random_keep(2, 32, 5, seed=9)
    tokens = torch.randn(2, 12, 32, generator=g)
    cases = [
        (lambda: vit(), lambda m: m(video, keep=keep)),
        (lambda: predictor(), lambda m: m(ctx, ctx_idx, tgt_idx, 1)),
        (
            lambda: (torch.manual_seed(0), AttentiveProbe(ProbeConfig(depth=2, heads=4, classes=3), 32))[1],
            lambda m: m(tokens),
        ),
    ]
    for make, run in cases:
        plain, wrapped = make(), wrap_blocks(make())
        outs = []
        for m in (plain, wrapped):
            out = run(m)
            out.square().sum().backward()
            outs.append((out, [p.grad for p in m.parameters()]))
        torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=0)
        for a, b in zip(outs[1][1], outs[0][1], strict=True):
            torch.testing.assert_close(a, b)
