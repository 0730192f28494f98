"""Prove that a refactor changed no behaviour: every example spec's validation and plan output, and the
final weights of every runnable example spec at reduced sizes, bit for bit against a recorded baseline.

    python tools/same_results.py record base.json      # on the revision before the change
    python tools/same_results.py check base.json       # on the revision after it: exit 1 on a difference

Each spec runs through the CLI (`python -m engine SPEC ...`) with one thread, a few steps, small batches
and few evaluation examples; its stages' final weights are hashed (SHA-256 over names, dtypes, shapes and
bytes) together with their final metrics. `salt_vitg.yaml` needs video files, so only its validation and
plan are compared. `--only NAME` limits the run to specs whose file name contains NAME; `--no-plan`
leaves the plan out of the comparison (for a change that means to change the plan's figures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STEPS = 4
NOT_RUN = {"salt_vitg.yaml": "needs video files on disk"}


def _engine(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    # the checkout's path appears in launch commands; two checkouts of the same code compare equal
    r.stdout, r.stderr = (s.replace(str(REPO), "<repo>") for s in (r.stdout, r.stderr))
    return r


def reduced(path: Path) -> list[str]:
    """Overrides that make every stage of a spec a few steps on small batches."""
    from schemas import load_spec
    from schemas.evals import MIN_SYNTHETIC_EXAMPLES

    spec = load_spec(str(path))
    out = []
    for name, stage in spec.stages.items():
        p = f"stages.{name}"
        if hasattr(stage, "schedule"):  # evaluate stages train nothing
            out += [f"{p}.schedule.steps={STEPS}", f"{p}.schedule.warmup=1", f"{p}.batch.global=8"]
            out += [f"{p}.checkpoint.every={STEPS // 2}", f"{p}.logging.every=1"]
        for i, ev in enumerate(getattr(stage, "evals", None) or []):
            few = MIN_SYNTHETIC_EXAMPLES if ev.kind == "top1" else 16  # top1 takes no fewer synthetic clips
            out += [f"{p}.evals.{i}.every={STEPS}", f"{p}.evals.{i}.examples={few}"]
            if hasattr(stage.evals[i], "samples"):
                out.append(f"{p}.evals.{i}.samples=[1,2]")
            if getattr(stage.evals[i], "batch", None) is not None:
                out.append(f"{p}.evals.{i}.batch=8")
    return out


def weights_digest(final: Path) -> str:
    import torch

    h = hashlib.sha256()
    for pt in sorted(final.glob("*.pt")):
        state = torch.load(pt, weights_only=True, map_location="cpu")
        h.update(pt.name.encode())
        for key in sorted(state):
            t = state[key]
            if isinstance(t, torch.Tensor):
                t = t.detach().contiguous()
                h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            else:
                h.update(f"{key}:{t!r}".encode())
    return h.hexdigest()


def record_spec(path: Path, plan: bool) -> dict:
    out: dict = {}
    for fmt in ("text", "json"):
        r = _engine("validate", str(path), "--format", fmt)
        out[f"validate_{fmt}"] = [r.returncode, r.stdout, r.stderr]
    if plan:
        r = _engine("plan", str(path), "--json")
        out["plan"] = [r.returncode, json.loads(r.stdout) if r.returncode == 0 else r.stdout, r.stderr]
    if path.name in NOT_RUN:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        overrides = reduced(path)
        r = _engine(str(path), f"run.output={tmp}", *overrides)
        if r.returncode != 0:
            raise SystemExit(f"{path.name}: run failed ({r.returncode})\n{r.stdout}\n{r.stderr}")
        stages = {}
        for done in sorted(Path(tmp).glob("*/final/done.json")):
            final = done.parent
            metrics = json.loads(done.read_text()).get("metrics", {})
            stages[final.parent.name] = {"weights": weights_digest(final), "metrics": metrics}
        out["run"] = {"overrides": overrides, "stages": stages}
    return out


def leaf_diffs(a: object, b: object, path: str = "") -> list[tuple[str, object, object]]:
    """The leaves where two JSON values differ, as (dotted path, before, after); absent leaves are None."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(a) + [k for k in b if k not in a]
        return [d for k in keys for d in leaf_diffs(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in leaf_diffs(x, y, f"{path}.{i}")]
    return [] if a == b else [(path, a, b)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["record", "check"])
    ap.add_argument("file")
    ap.add_argument("--only", default="")
    ap.add_argument("--no-plan", action="store_true")
    args = ap.parse_args()
    specs = sorted(p for p in (REPO / "specs").glob("*.yaml") if args.only in p.name)
    results = {}
    for path in specs:
        results[path.name] = record_spec(path, plan=not args.no_plan)
        print(
            f"{path.name}: {len(results[path.name].get('run', {}).get('stages', {}))} stages run", flush=True
        )
    if args.mode == "record":
        Path(args.file).write_text(json.dumps(results, indent=1, sort_keys=True))
        print(f"recorded {len(results)} specs in {args.file}")
        return 0
    base = json.loads(Path(args.file).read_text())
    differ = 0
    for name, now in results.items():
        before = base.get(name)
        if before is None:
            print(f"{name}: not in the baseline")
            differ += 1
            continue
        for key, value in now.items():
            if key == "plan" and args.no_plan:
                continue
            now_value = json.loads(json.dumps(value))
            if now_value != before.get(key):
                differ += 1
                print(f"{name}: {key} differs")
                for path, a, b in leaf_diffs(before.get(key), now_value)[:40]:
                    print(f"  {path}: {str(a)[:300]!s} -> {str(b)[:300]!s}")
    print(f"{len(results)} specs compared: {'all identical' if not differ else f'{differ} differences'}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
