"""Spec -> Plan: parameter counts, FLOPs, memory per rank and launch commands, without torch.

The formulas live with the configs: each model config (`schemas.models`) counts its parameters and attention
FLOPs, each objective config (`schemas.objectives`) the FLOPs of one training step, and the runtime's
`Objective.count` asks the same configs on the actual batch. Modules: `make` (the stages' plans), `memory`,
`launch` (torchrun, sbatch), `report` (the Plan record, its rendering and number formats).
"""

from .launch import Launch, sbatch_script, torchrun_command
from .make import make_plan
from .memory import Memory, compute_bytes
from .report import Flops, Plan, StagePlan, Tokens, fmt_bytes, fmt_count, fmt_flops

__all__ = [
    "Flops",
    "Launch",
    "Memory",
    "Plan",
    "StagePlan",
    "Tokens",
    "compute_bytes",
    "fmt_bytes",
    "fmt_count",
    "fmt_flops",
    "make_plan",
    "sbatch_script",
    "torchrun_command",
]
