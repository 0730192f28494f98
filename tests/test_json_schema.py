"""The committed JSON Schema (what editors check specs against) accepts exactly what `engine validate` accepts.

Editors see a spec file as written, with its `extends` parents merged by nothing; the tests validate the
merged tree the loader builds (schemas.load_tree), which is what `engine validate` checks too. Rules that
span fields (heads dividing dim, warmup within steps) are beyond a JSON Schema: the fragments here stay
clear of them, so that schema and loader must agree on every one.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from schemas import SpecError, load_spec, load_tree

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "schemas" / "spec.schema.json").read_text(encoding="utf-8"))
SPECS = sorted((ROOT / "specs").glob("*.yaml"))

# The README's style: kinds written only where they differ from the default.
BASE = """\
run: {name: t, output: runs/t}
stages:
  train:
    model: {kind: transformer, dim: 64, depth: 2, heads: 4}
    data: {kind: sparse_parity, k: 3, length: {train: [8, 16], eval: [17, 32]}}
    schedule: {steps: 100}
    batch: {global: 8}
"""


def schema_errors(data: object) -> list[str]:
    """What the committed JSON Schema finds wrong with a spec tree (empty when it accepts it)."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(data)]


def test_committed_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_spec_in_specs_is_valid_under_the_schema(spec: Path) -> None:
    load_spec(str(spec))  # engine validate accepts it
    assert schema_errors(load_tree(str(spec)).data) == []


# (name, the stage `train` with these keys replaced (a dotted key sets a nested one), accepted?)
FRAGMENTS: list[tuple[str, dict[str, object], bool]] = [
    ("stage_without_kind", {}, True),
    ("stage_kind_train", {"kind": "train"}, True),
    ("model_without_kind", {"model": {"dim": 64, "depth": 2, "heads": 4}}, True),
    ("optim_without_kind", {"optim": {"lr": 0.001}}, True),
    ("optim_without_kind_weight_decay", {"optim": {"lr": 0.001, "weight_decay": 0.1}}, True),
    ("optim_sgd", {"optim": {"kind": "sgd", "momentum": 0.9}}, True),
    ("optim_adamw", {"optim": {"kind": "adamw", "betas": [0.9, 0.99]}}, True),
    ("position_without_kind", {"model.position": {"base": 500000.0}}, True),
    ("position_learned", {"model.position": {"kind": "learned", "max_len": 64}}, True),
    ("ffn_without_kind", {"model.ffn": {"hidden": 128}}, True),
    ("ffn_moe", {"model.ffn": {"kind": "moe", "experts": 4, "top_k": 2, "hidden": 64}}, True),
    ("objective_without_kind", {"objective": {"label_smoothing": 0.1}}, True),
    ("evals_with_kind", {"evals": [{"kind": "exact_match", "every": 50}]}, True),
    ("steps_exact_float", {"schedule": {"steps": 1e5}}, True),
    ("device_memory_name", {"/resources": {"device_memory": "h100-80gb"}}, True),
    ("device_memory_gib", {"/resources": {"device_memory": 24}}, True),
    # rejected by both
    ("optim_without_kind_sgd_key", {"optim": {"momentum": 0.9}}, False),
    ("optim_sgd_with_adamw_key", {"optim": {"kind": "sgd", "betas": [0.9, 0.9]}}, False),
    ("optim_unknown_kind", {"optim": {"kind": "adam"}}, False),
    ("optim_lr_zero", {"optim": {"lr": 0}}, False),
    ("position_without_kind_learned_key", {"model.position": {"max_len": 64}}, False),
    ("ffn_without_kind_moe_key", {"model.ffn": {"experts": 4}}, False),
    ("data_without_kind", {"data": {"k": 3}}, False),
    (
        "math_formats_weights_mapping",
        {"data": {"kind": "math_formats", "formats": {"code": 1, "nl": 4}}},
        True,
    ),
    ("math_formats_weights_list", {"data": {"kind": "math_formats", "formats": [1, 1, 1]}}, True),
    ("math_formats_weights_two", {"data": {"kind": "math_formats", "formats": [1, 1]}}, False),
    ("math_formats_unknown_format", {"data": {"kind": "math_formats", "formats": {"latex": 1}}}, False),
    ("evals_without_kind", {"evals": [{"every": 50}]}, False),
    ("stage_without_kind_probe_key", {"encoder": {"stage": "x"}}, False),
    ("model_unknown_kind", {"model": {"kind": "mamba", "dim": 64}}, False),
    ("steps_not_whole", {"schedule": {"steps": 1.5}}, False),
    ("steps_float_1e26", {"schedule": {"steps": 1e26}}, False),
    ("steps_beyond_8_digits", {"schedule": {"steps": 100_000_000}}, False),
    ("batch_absurd", {"batch": {"global": 10**9}}, False),
    ("dim_boolean", {"model.dim": True}, False),
    ("depth_quoted", {"model.depth": "2"}, False),
    ("device_memory_unknown_name", {"/resources": {"device_memory": "h100"}}, False),
    ("device_memory_zero", {"/resources": {"device_memory": 0}}, False),
]


def fragment_spec(changes: dict[str, object]) -> dict[str, object]:
    """BASE with `changes` applied to its stage `train` (keys starting with / apply at the top level)."""
    spec = yaml.safe_load(BASE)
    for key, value in changes.items():
        node = spec if key.startswith("/") else spec["stages"]["train"]
        *parents, last = key.lstrip("/").split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return spec


@pytest.mark.parametrize(
    ("changes", "accepted"), [(c, a) for _, c, a in FRAGMENTS], ids=[n for n, *_ in FRAGMENTS]
)
def test_schema_accepts_a_fragment_exactly_when_validate_does(
    changes: dict[str, object], accepted: bool, tmp_path: Path
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(fragment_spec(changes), sort_keys=False), encoding="utf-8")
    try:
        load_spec(str(path))
        problems: list[str] = []
    except SpecError as e:
        problems = [str(i) for i in e.issues]
    assert (not problems) == accepted, f"engine validate: {problems or 'ok'}"
    errors = schema_errors(load_tree(str(path)).data)
    assert (not errors) == accepted, f"JSON Schema: {errors or 'ok'} (engine validate: {problems or 'ok'})"


def test_non_default_kinds_require_kind_and_the_default_does_not() -> None:
    optim = SCHEMA["$defs"]["TrainStage"]["properties"]["optim"]["oneOf"]
    assert optim[0] == {"$ref": "#/$defs/AdamW"}
    assert optim[1] == {"allOf": [{"$ref": "#/$defs/SGD"}, {"required": ["kind"]}]}
    data = SCHEMA["$defs"]["TrainStage"]["properties"]["data"]["oneOf"]  # no default kind: all need it
    assert all(option["allOf"][1] == {"required": ["kind"]} for option in data)
