"""Schema class -> builder: the one place where the spec language and the runtime meet."""

from __future__ import annotations

import importlib
from typing import Any

from schemas import data, evals, models, objectives, rl, spec

# Builders are named as "module:attribute" so that importing the registry imports no torch code.
MODELS: dict[type, str] = {
    models.Transformer: "engine.models.transformer:build",
    models.ViT: "engine.models.vit:build",
    models.MLP: "engine.models.mlp:build",
}
# Probe kinds, built as Probe(cfg, in_dim, classes) on a frozen encoder's tokens of width in_dim.
PROBES: dict[type, str] = {
    models.AttentiveProbe: "engine.models.probe:AttentiveProbe",
    models.LinearProbe: "engine.models.probe:LinearProbe",
    models.KnnProbe: "engine.models.probe:KnnProbe",
}
DATA: dict[type, str] = {
    data.SparseParity: "engine.data.sparse_parity:SparseParity",
    data.SolutionTree: "engine.data.solution_tree:SolutionTree",
    data.Connectivity: "engine.data.connectivity:Connectivity",
    data.Copy: "engine.data.copy_reverse:CopyReverse",
    data.Reverse: "engine.data.copy_reverse:CopyReverse",
    data.VariableAssignment: "engine.data.variable_assignment:VariableAssignment",
    data.Sudoku: "engine.data.sudoku:Sudoku",
    data.Countdown: "engine.data.countdown:Countdown",
    data.PhoneBook: "engine.data.phonebook:PhoneBook",
    data.ShortestPath: "engine.data.shortest_path:ShortestPath",
    data.KgExperts: "engine.data.kg_experts:KgExperts",
    data.MathFormats: "engine.data.math_formats:MathFormats",
    data.SyntheticVideo: "engine.data.video:SyntheticVideo",
    data.VideoFiles: "engine.data.video_files:VideoFiles",
    data.BiasedParity: "engine.data.biased_parity:BiasedParity",
}
OBJECTIVES: dict[type, str] = {
    objectives.NextToken: "engine.objectives.next_token:NextToken",
    objectives.PixelReconstruction: "engine.objectives.jepa:PixelReconstructionObjective",
    objectives.LatentPrediction: "engine.objectives.jepa:LatentPredictionObjective",
    objectives.EMALatentPrediction: "engine.objectives.jepa:EMALatentPredictionObjective",
    objectives.Hinge: "engine.objectives.hinge:Hinge",
}
EVALS: dict[type, str] = {
    evals.AccuracyByLength: "engine.evals.accuracy_by_length:AccuracyByLength",
    evals.ExactMatch: "engine.evals.exact_match:ExactMatch",
    evals.Top1: "engine.evals.top1:Top1",
    evals.Representation: "engine.evals.representation:Representation",
    evals.Verified: "engine.evals.verified:Verified",
    evals.Sampling: "engine.evals.sampling:SamplingEval",
    evals.TestTimeScaling: "engine.evals.sampling:TestTimeScalingEval",
    evals.Loss: "engine.evals.loss:Loss",
}
# Stage kind -> what builds its objective (and through it every module the stage trains).
STAGES: dict[type, str] = {
    spec.TrainStage: "engine.objectives.base:train_stage",
    spec.ProbeStage: "engine.objectives.probe:ProbeObjective",
}


# Stage kind -> what runs it: the training loop, evaluation alone, or RL post-training.
RUNNERS: dict[type, str] = {
    spec.TrainStage: "engine.runtime.trainer:StageRunner",
    spec.ProbeStage: "engine.runtime.trainer:StageRunner",
    spec.EvaluateStage: "engine.runtime.evaluate:EvaluateRunner",
    spec.RLStage: "engine.runtime.rl:RLRunner",
}
# RL algorithm config -> its losses and advantages.
ALGORITHMS: dict[type, str] = {
    rl.GRPO: "engine.objectives.rl:GRPOAlgorithm",
    rl.PPO: "engine.objectives.rl:PPOAlgorithm",
    rl.Reinforce: "engine.objectives.rl:ReinforceAlgorithm",
    rl.ExpertIteration: "engine.objectives.rl:ExpertIterationAlgorithm",
}


def _resolve(table: dict[type, str], cfg: Any) -> Any:
    target = table.get(type(cfg))
    if target is None:
        raise KeyError(f"no builder registered for {type(cfg).__name__} (kind {getattr(cfg, 'kind', '?')!r})")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def build_model(cfg: Any, vocab_size: int | None = None) -> Any:
    """An nn.Module for a model config (token models also take the vocabulary size)."""
    builder = _resolve(MODELS, cfg)
    return builder(cfg) if vocab_size is None else builder(cfg, vocab_size)


def build_probe(cfg: Any, in_dim: int, classes: int) -> Any:
    """A probe module for a probe config, on tokens of width `in_dim`, with `classes` classes (unless cfg sets them)."""
    return _resolve(PROBES, cfg)(cfg, in_dim, classes)


def build_data(cfg: Any) -> Any:
    """A generator for a data config."""
    return _resolve(DATA, cfg)(cfg)


def build_objective(cfg: Any, models: dict[str, Any], ctx: Any) -> Any:
    """An objective over the stage's models; `ctx` (a BuildContext) builds, shards and loads the rest."""
    return _resolve(OBJECTIVES, cfg)(cfg, models, ctx)


def build_stage_objective(stage: Any, ctx: Any) -> Any:
    """The objective of a stage, with every module it trains; `ctx` is the stage's BuildContext."""
    return _resolve(STAGES, stage)(stage, ctx)


def stage_runner(stage: Any) -> Any:
    """The class that runs a stage of this kind (`Runner(spec, name, stage, dist)` with `done()` and `run()`)."""
    return _resolve(RUNNERS, stage)


def build_eval(cfg: Any, **context: Any) -> Any:
    """An evaluator; `context` holds the generator, data config, seed, stage name and Dist."""
    return _resolve(EVALS, cfg)(cfg, **context)


def build_algorithm(cfg: Any, **rollout: Any) -> Any:
    """An RL algorithm; `rollout` holds the sampling temperature, samples per prompt and max new tokens."""
    return _resolve(ALGORITHMS, cfg)(cfg, **rollout)
