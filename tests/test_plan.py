"""Tests of engine.plan: exact parameter counts, FLOPs, memory trends, launch commands, no torch import."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.plan import fmt_bytes, fmt_count, fmt_flops, make_plan
from schemas import Spec
from schemas.evals import MIN_SYNTHETIC_EXAMPLES

ROOT = Path(__file__).resolve().parents[1]

# Sparse parity with bit strings of 8..16 (train) and 17..32 (eval): T = L + 4, so train T in 12..20, T_max 36.
DATA = {"kind": "sparse_parity", "k": 3, "length": {"train": [8, 16], "eval": [17, 32]}}  # vocab 8


def spec_dict(model: dict[str, Any], *, nodes: int = 1, procs: int = 1, **stage: Any) -> dict[str, Any]:
    """A one-stage spec dict around `model`; keyword arguments replace stage fields."""
    train = {
        "model": {"kind": "transformer", **model},
        "data": DATA,
        "schedule": {"steps": 100},
        "batch": {"global": 8},
        **stage,
    }
    return {
        "run": {"name": "t", "output": "runs/t"},
        "resources": {"nodes": nodes, "procs_per_node": procs, "device": "cpu"},
        "stages": {"train": train},
    }


def build(model: dict[str, Any], **kwargs: Any) -> Spec:
    """A validated one-stage Spec around `model`."""
    return Spec.model_validate(spec_dict(model, **kwargs))


def params_of(model: dict[str, Any], **stage: Any):
    """Parameter counts of `model` as the plan reports them."""
    return make_plan(build(model, **stage)).stages["train"].params


# ----------------------------------------------------------------------------- parameter counts

GELU_64 = {"dim": 64, "depth": 2, "heads": 4}  # rope, rmsnorm, no bias, untied, hidden 4*64 = 256, vocab 8


def test_params_dense_gelu() -> None:
    # block: norms 2*64 + attention 4*64*64 + mlp 64*256 + 256*64
    block = 2 * 64 + 4 * 64 * 64 + 2 * 64 * 256
    assert block == 49280
    p = params_of(GELU_64)
    assert p.largest_block == block
    # tok_emb 8*64, lm_head 64*8, final norm 64
    assert p.total == 2 * block + 8 * 64 + 64 * 8 + 64 == 99648
    assert p.active == p.total
    assert p.embedding == 2 * 8 * 64


def test_params_swiglu_default_hidden_with_bias_and_layernorm() -> None:
    # default hidden: 8*128//3 = 341, rounded up to a multiple of 64 -> 384
    p = params_of(
        {
            "dim": 128,
            "depth": 2,
            "heads": 4,
            "bias": True,
            "norm": "layernorm",
            "ffn": {"kind": "dense", "activation": "swiglu"},
        }
    )
    norms = 2 * (2 * 128)
    attention = 4 * (128 * 128 + 128)
    mlp = 2 * (128 * 384 + 384) + (384 * 128 + 128)  # w1, w3, w2 with biases
    block = norms + attention + mlp
    assert block == 214912
    assert p.largest_block == block
    assert p.total == 2 * block + 2 * 8 * 128 + 2 * 128 == 432128


def test_params_grouped_query_attention() -> None:
    # 8 heads of dim 8, 2 kv heads -> wk, wv are 64 x 16
    p = params_of({"dim": 64, "depth": 2, "heads": 8, "kv_heads": 2, "ffn": {"kind": "dense", "hidden": 128}})
    block = 2 * 64 + (64 * 64 + 2 * 64 * 16 + 64 * 64) + 2 * 64 * 128
    assert block == 26752
    assert p.total == 2 * block + 2 * 8 * 64 + 64 == 54592


@pytest.mark.parametrize(
    ("position", "rows"),
    [
        ({"kind": "learned", "max_len": 64}, 64),
        ({"kind": "coupled", "encoding": "learned", "max_position": 50}, 50),
        ({"kind": "coupled", "encoding": "rope"}, 0),
        ({"kind": "nope"}, 0),
    ],
)
def test_params_tied_embeddings_and_positions(position: dict[str, Any], rows: int) -> None:
    # Coupled ids come from the data: copy with ids up to 40 (a table of 50 rows holds them).
    coupled = {"kind": "copy", "length": {"train": [1, 10], "eval": [11, 20]}, "max_position_id": 40}
    p = params_of(
        {"dim": 64, "depth": 1, "heads": 4, "vocab_size": 16, "tie_embeddings": True, "position": position},
        **({"data": coupled} if position["kind"] == "coupled" else {}),
    )
    block = 2 * 64 + 4 * 64 * 64 + 2 * 64 * 256
    # tok_emb 16*64 (shared with the head), position table rows*64, final norm 64; no lm_head
    assert p.total == block + 16 * 64 + rows * 64 + 64
    assert p.embedding == 16 * 64 + rows * 64


def test_params_untied_learned_positions() -> None:
    p = params_of({"dim": 64, "depth": 1, "heads": 4, "position": {"kind": "learned", "max_len": 40}})
    assert p.embedding == 8 * 64 + 40 * 64 + 64 * 8
    assert p.total == 49280 + 8 * 64 + 40 * 64 + 64 * 8 + 64 == 52928


def test_params_moe_total_vs_active() -> None:
    p = params_of({**GELU_64, "ffn": {"kind": "moe", "experts": 8, "top_k": 2, "hidden": 128}})
    router, expert = 64 * 8, 2 * 64 * 128  # router has no bias; an expert is w1 [64,128] + w2 [128,64]
    shared = 2 * 64 + 4 * 64 * 64
    root = 2 * 8 * 64 + 64
    assert p.largest_block == shared + router + 8 * expert == 148096
    assert p.total == root + 2 * (shared + router + 8 * expert) == 297280
    assert p.active == root + 2 * (shared + router + 2 * expert) == 100672


def test_params_moe_swiglu_experts_have_no_bias() -> None:
    moe = {"kind": "moe", "experts": 4, "top_k": 1, "hidden": 128, "activation": "swiglu"}
    p = params_of({"dim": 64, "depth": 1, "heads": 4, "bias": True, "ffn": moe})
    shared = 2 * 64 + 4 * (64 * 64 + 64)  # attention keeps its biases
    router, expert = 64 * 4, 3 * 64 * 128
    assert p.total == shared + router + 4 * expert + 2 * 8 * 64 + 64 == 116416
    assert p.active == shared + router + 1 * expert + 2 * 8 * 64 + 64 == 42688


def test_count_params_takes_vocab_from_argument() -> None:
    cfg = build(GELU_64).stages["train"].model
    assert cfg.param_count(1000).total - cfg.param_count(8).total == 2 * (1000 - 8) * 64


# ----------------------------------------------------------------------------- FLOPs


def test_flops_per_step_hand_computed() -> None:
    plan = make_plan(build(GELU_64))  # 99648 params, global batch 8, 100 steps
    s = plan.stages["train"]
    # train T = 12..20: E[T] = 16, sum over T of T*(T+1) = 2508 (9 lengths)
    assert s.tokens.per_example == 16
    assert s.tokens.per_step == 8 * 16
    assert s.tokens.total == 100 * 8 * 16
    six_nd = 6 * 99648 * 8 * 16
    attention = 3 * (2 * 64 * 2 * 8 * 2508 / 9)  # train = 3 x forward; forward = 2*dim*depth*B*E[T(T+1)]
    assert s.flops.six_nd_per_step == pytest.approx(six_nd)
    assert s.flops.attention_per_step == pytest.approx(attention)
    assert s.flops.per_step == pytest.approx(six_nd + attention)
    assert s.flops.total == pytest.approx(100 * (six_nd + attention))
    assert s.flops.attention_total == pytest.approx(100 * attention)


def step_flops(stage: Any, lengths: list[int], vocab_size: int = 8) -> tuple[float, float]:
    """(6·N·D, attention) of the stage's objective config over sequences of these lengths."""
    f = stage.objective.step_flops(stage.model, vocab_size, sum(lengths), sum(t * (t + 1) for t in lengths))
    return f.six_nd, f.attention


def test_train_flops_on_actual_lengths_uses_active_params() -> None:
    stage = build(GELU_64).stages["train"]
    dense, attention = step_flops(stage, [12, 20, 5])
    assert dense == 6 * 99648 * 37
    assert attention == 6 * 64 * 2 * (12 * 13 + 20 * 21 + 5 * 6)

    moe = build({**GELU_64, "ffn": {"kind": "moe", "experts": 8, "top_k": 2, "hidden": 128}}).stages["train"]
    assert step_flops(moe, [10])[0] == 6 * 100672 * 10
    # another vocabulary: 2*(1000-8)*64 more embedding parameters
    assert step_flops(stage, [10], vocab_size=1000)[0] == 6 * (99648 + 2 * 992 * 64) * 10


# ----------------------------------------------------------------------------- 1B spec without torch

BILLION = {"dim": 2048, "depth": 20, "heads": 16, "vocab_size": 32000}


def test_one_billion_spec_plans_without_torch() -> None:
    code = (
        "import json, sys\n"
        "from schemas import Spec\n"
        "from engine.plan import make_plan\n"
        f"spec = Spec.model_validate({spec_dict(BILLION, nodes=2, procs=8, batch={'global': 64})!r})\n"
        "plan = make_plan(spec)\n"
        "print(json.dumps({'total': plan.stages['train'].params.total,\n"
        "                  'leaked': [m for m in ('torch', 'numpy') if m in sys.modules]}))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["leaked"] == []
    # blocks: 20 * (2*2048 + 12*2048^2); embeddings 2 * 32000*2048; final norm 2048
    assert out["total"] == 20 * (2 * 2048 + 12 * 2048**2) + 2 * 32000 * 2048 + 2048 == 1_137_788_928
    assert 1.0e9 < out["total"] < 1.3e9


# ----------------------------------------------------------------------------- memory


def memory(model: dict[str, Any] = GELU_64, **kwargs: Any):
    """The plan's memory estimate for a one-stage spec."""
    return make_plan(build(model, **kwargs)).stages["train"].memory_per_rank


def test_memory_hand_computed() -> None:
    m = memory(procs=2)  # fp32 on cpu, AdamW, micro = 8/2 = 4 examples of T_max = 36
    n = 99648
    assert m.estimate and m.shards == 2 and m.bytes_per_el == 4 and m.micro_batch == 4 and m.seq_len == 36
    assert (m.params, m.grads, m.optimizer) == (4 * n // 2, 4 * n // 2, 8 * n // 2)
    assert m.gathered == 4 * (2 * 49280 + (2 * 8 * 64 + 64))  # two blocks in flight + the root's params
    assert m.activations == 34 * 4 * 36 * 64 * 2 * 4 // 2 + 4 * 36 * 8 * 4 * 2
    assert m.total == m.params + m.grads + m.optimizer + m.gathered + m.activations


def test_memory_shrinks_with_world_size() -> None:
    m1, m2, m4 = memory(procs=1), memory(procs=2), memory(nodes=2, procs=2)
    assert m1.gathered == 0 and m1.shards == 1
    assert m1.params == 4 * 99648 and m4.params == 99648
    assert m1.total > m2.total > m4.total


def test_memory_shrinks_with_activation_checkpointing() -> None:
    deep = {"dim": 64, "depth": 8, "heads": 4}
    plain = memory(deep, procs=2)
    ckpt = memory(deep, procs=2, distributed={"activation_checkpointing": True})
    assert ckpt.activations < plain.activations
    assert ckpt.total < plain.total
    el, tokens = 4, 4 * 36
    assert ckpt.activations == 2 * tokens * 64 * 8 * el + 34 * tokens * 64 * el // 2 + tokens * 8 * 4 * 2


def test_memory_precision_and_optimizer() -> None:
    cuda = Spec.model_validate({**spec_dict(GELU_64), "resources": {"device": "cuda"}})
    m_cuda = make_plan(cuda).stages["train"].memory_per_rank
    assert m_cuda.bytes_per_el == 2
    assert memory(distributed={"precision": "bf16"}).bytes_per_el == 2
    assert memory().bytes_per_el == 4
    assert memory(optim={"kind": "sgd"}).optimizer == 0
    assert memory(optim={"kind": "sgd", "momentum": 0.9}).optimizer == 4 * 99648
    assert memory().optimizer == 8 * 99648


# ----------------------------------------------------------------------------- launch


def test_torchrun_single_node_is_standalone() -> None:
    cmd = make_plan(build(GELU_64, procs=2), "specs/x.yaml").launch.torchrun
    assert cmd == "torchrun --standalone --nproc_per_node=2 -m engine specs/x.yaml"


def test_torchrun_multi_node_uses_rendezvous() -> None:
    cmd = make_plan(build(GELU_64, nodes=2, procs=4), "specs/x.yaml").launch.torchrun
    assert "--standalone" not in cmd
    for flag in (
        "--nnodes=2",
        "--nproc_per_node=4",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=$MASTER_ADDR:29500",
    ):
        assert flag in cmd
    assert cmd.endswith("-m engine specs/x.yaml")


def test_overrides_are_quoted() -> None:
    overrides = ["stages.train.schedule.steps=10", "run.name=my run", "run.output=$HOME/x"]
    plan = make_plan(build(GELU_64), "my specs/x.yaml", overrides)
    cmd = plan.launch.torchrun
    assert "'run.name=my run'" in cmd and "'run.output=$HOME/x'" in cmd
    assert shlex.split(cmd)[-4:] == ["my specs/x.yaml", *overrides]
    assert "'run.name=my run'" in plan.launch.sbatch


def test_sbatch_script() -> None:
    d = spec_dict(GELU_64, nodes=2, procs=8, batch={"global": 16})
    d["resources"].update(device="cuda", slurm={"partition": "gpu", "time": "01:00:00"})
    script = make_plan(Spec.model_validate(d), "specs/x.yaml").launch.sbatch
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in (
        "#SBATCH --job-name=t",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --time=01:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --output=t-%j.out",
        "set -euo pipefail",
    ):
        assert line in lines
    assert not any(line.startswith("#SBATCH --account") for line in lines)
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1' in script
    assert lines[-1].startswith("srun torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d")
    cpu = make_plan(build(GELU_64)).launch.sbatch
    assert "--gpus-per-node" not in cpu


# ----------------------------------------------------------------------------- output


def test_to_dict_round_trips_through_json() -> None:
    plan = make_plan(build({**GELU_64, "ffn": {"kind": "moe"}}, procs=2), "specs/x.yaml", ["run.seed=1"])
    d = plan.to_dict()
    assert json.loads(json.dumps(d)) == d
    s = d["stages"]["train"]
    assert isinstance(s["params"]["total"], int) and isinstance(s["flops"]["total"], float)
    assert s["memory_per_rank"]["estimate"] is True
    assert d["launch"]["torchrun"] == plan.launch.torchrun
    assert set(s) >= {"params", "tokens", "flops", "memory_per_rank", "steps", "global_batch", "micro_batch"}


def test_render_reports_every_section() -> None:
    plan = make_plan(build(GELU_64, procs=2), "specs/x.yaml")
    text = plan.render()
    for needle in (
        "stage train",
        "99.6K",
        "attention",
        fmt_flops(plan.stages["train"].flops.total),
        "estimate",
        plan.launch.torchrun,
    ):
        assert needle in text
    assert "sbatch" not in text  # one CPU node: no sbatch script
    cuda = Spec.model_validate({**spec_dict(GELU_64), "resources": {"device": "cuda"}})
    assert "#SBATCH" in make_plan(cuda).render()


def test_number_formats() -> None:
    assert [fmt_count(x) for x in (950, 12_300_000, 1_010_000_000, 999_999, 4096)] == [
        "950",
        "12.3M",
        "1.01B",
        "1.00M",
        "4.10K",
    ]
    assert [fmt_count(x) for x in (999e12, 3.072e21)] == ["999T", "3.07e21"]  # not "3072000000T"
    assert fmt_flops(1.234e15) == "1.23e15" and fmt_flops(5e-3) == "5.00e-3"
    assert [fmt_bytes(x) for x in (512, 3 * 2**20 + 2**18, 12.1 * 2**30)] == ["512 B", "3.25 MiB", "12.1 GiB"]


def test_probe_of_a_bare_checkpoint_is_marked_unplanned_not_zero() -> None:
    """The plan cannot know a checkpoint's shape without reading it: it says so instead of printing zeros."""
    from helpers import REPO

    from schemas import load_spec

    url = "s3://bucket/teacher/final"
    spec = load_spec(
        str(REPO / "specs" / "salt_tiny.yaml"), [f"stages.probe_ssv2.encoder={{checkpoint: {url}}}"]
    )
    plan = make_plan(spec)
    probe, known = plan.stages["probe_ssv2"], plan.stages["probe_k400"]
    assert probe.unplanned and url in probe.unplanned and known.unplanned is None
    assert known.flops.total > 0
    text = plan.render()
    section = text.split("stage probe_ssv2 ")[1].split("\n\n")[0]
    assert "not planned" in section and "FLOPs/step" not in section and "memory/rank" not in section
    assert json.loads(json.dumps(plan.to_dict()))["stages"]["probe_ssv2"]["unplanned"] == probe.unplanned


def test_student_of_a_bare_checkpoint_teacher_is_marked_unplanned() -> None:
    """A `{checkpoint: URL}` teacher's forward FLOPs and the predictor's width need its done.json: the plan
    says so instead of dropping them."""
    from helpers import REPO

    from schemas import load_spec

    url = "s3://bucket/teacher/final"
    path = str(REPO / "specs" / "salt_tiny.yaml")
    known = make_plan(load_spec(path)).stages["student"]
    student = make_plan(load_spec(path, [f"stages.student.objective.teacher={{checkpoint: {url}}}"]))
    student = student.stages["student"]
    assert known.unplanned is None and known.flops.frozen_2nd_per_step > 0
    assert student.unplanned and url in student.unplanned and "FLOPs" in student.unplanned


def test_papers_figure_excludes_attention() -> None:
    """`papers_*` is 6·N·D (+ 2·N·D frozen) without attention; `per_step`/`total` add the attention scores."""
    from helpers import REPO

    from schemas import load_spec

    plan = make_plan(load_spec(str(REPO / "specs" / "salt_tiny.yaml")))
    f = plan.stages["student"].flops
    assert f.papers_per_step == pytest.approx(f.six_nd_per_step + f.frozen_2nd_per_step)
    assert f.per_step == pytest.approx(f.papers_per_step + f.attention_per_step)
    assert f.total == pytest.approx(f.per_step * plan.stages["student"].steps)
    assert f"{fmt_flops(f.papers_total)} papers' 6ND + 2ND (no attention)" in plan.render()


# ----------------------------------------------------------------------------- warnings


def big(**resources: Any) -> Spec:
    """A one-stage spec of ~1.1B parameters on one rank (~17 GiB of fp32 state), with these resources."""
    d = spec_dict(BILLION)
    d["resources"].update(resources)
    return Spec.model_validate(d)


def test_no_warning_without_a_known_device_memory_on_cpu() -> None:
    assert make_plan(big()).warnings() == []


def test_warns_when_memory_per_rank_exceeds_the_given_device_memory() -> None:
    plan = make_plan(big(device_memory=16))
    total = plan.stages["train"].memory_per_rank.total
    assert 16 * 2**30 < total < 24 * 2**30
    [w] = plan.warnings()
    assert w.startswith(
        f"stage train: ~{fmt_bytes(total)} per rank (estimate) exceeds resources.device_memory"
    )
    assert "(16.0 GiB)" in w and "parameters, gradients and optimizer state are the largest part" in w
    assert make_plan(big(device_memory=24)).warnings() == []
    assert plan.device_memory == 16 * 2**30 and plan.to_dict()["device_memory"] == 16 * 2**30


def test_known_accelerator_names_give_their_memory() -> None:
    assert make_plan(big(device_memory="t4")).warnings()[0].count("the memory of one t4 (16.0 GiB)") == 1
    assert make_plan(big(device_memory="a100-80gb")).warnings() == []


def test_the_run_passes_its_measured_device_memory() -> None:
    plan = make_plan(big(device_memory="a100-80gb"))
    [w] = plan.warnings(device_memory_bytes=8 * 2**30)  # what the run found, over what the spec says
    assert "exceeds this device's 8.00 GiB" in w
    assert make_plan(big()).warnings(device_memory_bytes=64 * 2**30) == []


def test_cuda_without_device_memory_is_checked_against_the_largest_known_accelerator() -> None:
    assert make_plan(big(device="cuda")).warnings() == []
    huge = spec_dict({"dim": 16384, "depth": 64, "heads": 16, "vocab_size": 32000})
    huge["resources"]["device"] = "cuda"
    [w] = make_plan(Spec.model_validate(huge)).warnings()
    assert "largest known accelerator (mi300x)" in w and "TiB per rank" in w


def test_activation_heavy_stage_is_told_to_lower_micro_or_checkpoint() -> None:
    wide = spec_dict(GELU_64, batch={"global": 4096})
    wide["resources"]["device_memory"] = 1
    [w] = make_plan(Spec.model_validate(wide)).warnings()
    assert "activations are the largest part" in w and "batch.micro" in w
    assert "activation_checkpointing" in w


# ----------------------------------------------------------------------------- plan == runtime

TOKEN_SPECS = sorted(
    p.name
    for p in (ROOT / "specs").glob("*.yaml")
    if p.stem not in {"salt_frontier", "salt_small", "salt_tiny", "salt_vitg", "vjepa_tiny"}
)


def reduced_spec(name: str, tmp_path: Path, steps: int) -> Spec:
    """An example spec at reduced size: `steps` steps of 8 examples per stage, logged at every step."""
    from schemas import load_spec

    spec = load_spec(str(ROOT / "specs" / name))
    overrides = [f"run.output={tmp_path}"]
    for stage_name, stage in spec.stages.items():
        p = f"stages.{stage_name}"
        if not hasattr(stage, "schedule"):  # an evaluate stage: a few prompts, few samples
            for i, ev in enumerate(stage.evals):
                overrides.append(f"{p}.evals.{i}.examples=4")
                if hasattr(ev, "samples"):
                    overrides.append(f"{p}.evals.{i}.samples=[1,2]")
                if hasattr(ev, "n"):  # sampling: two samples of at most 8 tokens per prompt
                    overrides += [
                        f"{p}.evals.{i}.n=2",
                        f"{p}.evals.{i}.k=[1,2]",
                        f"{p}.evals.{i}.max_new_tokens=8",
                    ]
            continue
        if stage.kind == "rl":  # 8 prompts x 2 samples of at most 8 new tokens
            overrides += [f"{p}.rollout.samples=2", f"{p}.rollout.max_new_tokens=8", f"{p}.batch.micro=null"]
        overrides += [f"{p}.schedule.steps={steps}", f"{p}.schedule.warmup=0", f"{p}.batch.global=8"]
        overrides += [f"{p}.logging.every=1", f"{p}.checkpoint.every={steps}"]
        evals = [  # evaluated once, at the end, on few examples (the whole list: it may be the objective's default)
            {  # top1 takes no fewer held-out clips of synthetic video
                **e.model_dump(mode="json"),
                "every": steps + 1,
                "examples": MIN_SYNTHETIC_EXAMPLES if e.kind == "top1" else 4,
            }
            for e in getattr(stage, "evals", [])
        ]
        overrides.append(f"{p}.evals={json.dumps(evals)}")
        if getattr(stage, "model", None) is not None and stage.model.kind == "transformer":
            overrides.append(f"{p}.model.depth=1")
    return load_spec(str(ROOT / "specs" / name), overrides)


def logged_rows(spec: Spec, stage: str) -> list[dict[str, Any]]:
    """The loss rows of a stage's metrics.jsonl."""
    from engine.runtime.metrics import read_metrics

    return [r for r in read_metrics(f"{spec.run.output.rstrip('/')}/{stage}") if "loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["salt_tiny.yaml", "vjepa_tiny.yaml"])
def test_masked_video_plan_flops_equal_the_logged_first_step(name: str, tmp_path: Path) -> None:
    """The plan draws the step's masks as the run does: planned FLOPs per step = the logged ones, every
    stage (pixel reconstruction, frozen teacher, EMA target, probes)."""
    from helpers import train_in_process

    spec = reduced_spec(name, tmp_path, steps=1)
    plan = make_plan(spec)
    train_in_process(spec)
    for stage in spec.stages:
        (row,) = logged_rows(spec, stage)
        planned = plan.stages[stage].flops
        assert row["flops"] == pytest.approx(planned.per_step, rel=1e-9), stage
        assert row["attention_flops"] == pytest.approx(planned.attention_per_step, rel=1e-9), stage


@pytest.mark.slow
def test_masked_video_plan_total_equals_the_logged_flops_of_every_step(tmp_path: Path) -> None:
    """Two steps of salt_tiny's teacher and student: the cumulative FLOPs (and attention FLOPs) logged at each
    step are the objective config's `step_flops` on that step's masks as the plan's `step_masks` draws them,
    and the plan's total (it draws every step of a short stage) is the logged total, to float rounding (the
    run sums per micro-batch). Steps 0 and 1 trim differently, so this also fails if the plan took one step
    for all."""
    from engine.plan.make import planned_steps, step_masks
    from engine.runtime.distributed import Dist
    from engine.runtime.trainer import run_spec

    spec = reduced_spec("salt_tiny.yaml", tmp_path, steps=2)
    plan = make_plan(spec)
    for name in ("teacher", "student"):
        run_spec(spec, Dist(), only=name)
        stage = spec.stages[name]
        teacher = spec.stages["teacher"].model if name == "student" else None
        assert planned_steps(2, stage.batch.global_) == [0, 1]
        f0, f1 = (
            stage.objective.step_flops(
                stage.model, stage.predictor, step_masks(spec, name, stage, s), 8, teacher
            )
            for s in (0, 1)
        )
        assert f0.total != f1.total, f"{name}: steps 0 and 1 trim alike; pick another seed for this test"
        rows = {r["step"]: r for r in logged_rows(spec, name)}
        assert rows[1]["flops"] == pytest.approx(f0.total, rel=1e-12), name
        assert rows[2]["flops"] == pytest.approx(f0.total + f1.total, rel=1e-12), name
        assert rows[2]["attention_flops"] == pytest.approx(f0.attention + f1.attention, rel=1e-12), name
        planned = plan.stages[name].flops
        assert planned.total == pytest.approx(rows[2]["flops"], rel=1e-12), name
        assert planned.attention_total == pytest.approx(rows[2]["attention_flops"], rel=1e-12), name


def test_planned_steps_are_all_of_a_short_stage_and_spread_over_a_long_one() -> None:
    """Every step while their clips fit the budget; else the budget's worth, first and last included."""
    from engine.plan.make import MASKED_CLIPS, planned_steps

    assert planned_steps(200, 32) == list(range(200))
    long = planned_steps(160000, 3072)
    assert len(long) == MASKED_CLIPS // 3072 == 5 and long[0] == 0 and long[-1] == 159999
    assert planned_steps(10, MASKED_CLIPS * 2) == [0]


@pytest.mark.slow
@pytest.mark.parametrize("name", TOKEN_SPECS)
def test_token_plan_flops_per_token_equal_the_logged(name: str, tmp_path: Path) -> None:
    """Token stages: the plan's expected FLOPs per token (from the data's length moments) are within 1% of the
    logged ones over a few steps; 6·N·D per token is exact, attention depends on the lengths drawn."""
    from helpers import train_in_process

    spec = reduced_spec(name, tmp_path, steps=3)
    plan = make_plan(spec)
    train_in_process(spec)
    for stage in spec.stages:
        planned = plan.stages[stage]
        if planned.inference is not None:  # an evaluate stage trains nothing
            continue
        last = logged_rows(spec, stage)[-1]
        per_token = planned.flops.per_step / planned.tokens.per_step
        if planned.rl is None:  # an RL step's sequences are as long as the policy writes: attention differs
            assert last["flops"] / last["tokens"] == pytest.approx(per_token, rel=0.01), stage
        # 6·N per trained token (+ 2·N per token of each rollout and scoring forward of an RL step) is exact
        exact = planned.flops.papers_per_step if planned.rl is not None else planned.flops.six_nd_per_step
        six_nd = exact / planned.tokens.per_step
        assert (last["flops"] - last["attention_flops"]) / last["tokens"] == pytest.approx(six_nd, rel=1e-9)


def test_salt_l_compute_by_the_papers_accounting() -> None:
    """SALT App. E / F (docs/papers/salt.md) count every mask generator's context as 0.1 of the clip and the
    predictor on the whole clip: given that batch composition, the objective configs reproduce the paper's
    teacher 0.241e21 and student 0.951e21 (encoder 2.77e20 + predictor 2.03e20 by 6ND, teacher forward
    4.67e20 by 2ND), 1.192e21 in all. (The plan counts the trimmed masks the run draws instead.)"""
    from helpers import REPO

    from schemas import load_spec

    spec = load_spec(str(REPO / "specs" / "salt_vitg.yaml"), ["stages.student.model.size=L"])

    def papers(name: str) -> tuple[float, float]:
        stage = spec.stages[name]
        vit, obj, batch = stage.model, stage.objective, stage.batch.global_
        pairs = [(0.1 * vit.tokens, 0.9 * vit.tokens)] * (len(obj.masks.masks) * batch)
        teacher = spec.stages[obj.teacher.stage].model if name == "student" else None
        f = obj.step_flops(vit, stage.predictor, pairs, batch, teacher)
        return f.six_nd * stage.schedule.steps, f.frozen_2nd * stage.schedule.steps

    (teacher, teacher_frozen), (student, student_frozen) = papers("teacher"), papers("student")
    assert teacher_frozen == 0
    assert teacher == pytest.approx(0.241e21, rel=0.03)
    assert student == pytest.approx(2.77e20 + 2.03e20, rel=0.03)
    assert student_frozen == pytest.approx(4.67e20, rel=0.03)
    assert teacher + student + student_frozen == pytest.approx(1.192e21, rel=0.03)
