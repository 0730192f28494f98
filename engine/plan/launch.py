"""How to start a spec: the torchrun line for its resources and an sbatch script."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.spec import Resources, Spec

RDZV_PORT = 29500


@dataclass(frozen=True)
class Launch:
    """How to start the spec: the torchrun line for its resources and an sbatch script."""

    torchrun: str
    sbatch: str


def torchrun_command(
    resources: Resources, spec_path: str, overrides: Sequence[str] = (), rendezvous: bool = False
) -> str:
    """The torchrun line: --standalone on one node, c10d rendezvous on $MASTER_ADDR otherwise (or if asked)."""
    args = " ".join(shlex.quote(a) for a in (spec_path, *overrides))
    procs = resources.procs_per_node
    if resources.nodes == 1 and not rendezvous:
        head = f"torchrun --standalone --nproc_per_node={procs}"
    else:
        head = (
            f"torchrun --nnodes={resources.nodes} --nproc_per_node={procs} --rdzv_backend=c10d "
            f"--rdzv_endpoint=$MASTER_ADDR:{RDZV_PORT} --rdzv_id=$SLURM_JOB_ID"
        )
    return f"{head} -m engine {args}"


def _job_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "engine"


def sbatch_script(spec: Spec, spec_path: str, overrides: Sequence[str] = ()) -> str:
    """An sbatch script that starts one torchrun per node with c10d rendezvous on the first node."""
    res, name = spec.resources, _job_name(spec.run.name)
    slurm = res.slurm
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={res.nodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    if res.device == "cuda":
        lines.append(f"#SBATCH --gpus-per-node={res.procs_per_node}")
    lines += [f"#SBATCH --cpus-per-task={slurm.cpus_per_task}", f"#SBATCH --time={slurm.time}"]
    if slurm.partition:
        lines.append(f"#SBATCH --partition={slurm.partition}")
    if slurm.account:
        lines.append(f"#SBATCH --account={slurm.account}")
    lines += [
        f"#SBATCH --output={name}-%j.out",
        "",
        "set -euo pipefail",
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export MASTER_ADDR",
        "srun " + torchrun_command(res, spec_path, overrides, rendezvous=True),
    ]
    return "\n".join(lines) + "\n"
