"""Greedy decoding of answers to fixed prompts, scored by the data generator's own verifier, per split."""

from __future__ import annotations

import torch

from engine.data.base import Examples, Generator
from engine.generate import Completions, greedy, max_positions
from engine.objectives.base import Objective
from engine.runtime.distributed import Dist
from schemas.evals import Verified as VerifiedConfig

from .exact_match import fixed_sets


class Verified:
    """`verified/<split>`: the fraction of greedy answers that `gen.verify` accepts; with `gen.check` (e.g.
    connectivity's decision and evidence) also `check/<key>/<split>`.

    Unlike exact_match, any right answer counts: another shortest path, another valid search trace, any
    correct Sudoku grid. Decoding is KV-cached greedy generation (`engine.generate`); every rank runs the same
    number of forwards. Generated tokens of a coupled-position model take the example's own ids (as under
    teacher forcing; beyond the example they keep counting), or the ids its position head predicts (PPC).
    """

    def __init__(self, cfg: VerifiedConfig, gen: Generator, data_cfg, seed: int, stage: str, dist: Dist):
        self.cfg, self.gen, self.dist = cfg, gen, dist
        self.sets = fixed_sets(cfg.splits, cfg.examples, gen, data_cfg, seed, stage, dist)
        self.limit = data_cfg.max_seq_len()
        self.checks: list[
            str
        ] = []  # check() keys, from the gold answer of one example (the same on every rank)
        if hasattr(gen, "check"):
            ex = next(iter(self.sets.values()))[0][0]
            self.checks = sorted(gen.check(ex, ex.tokens[len(ex.prompt) :].tolist()))

    def _decode(self, objective: Objective, part: Examples) -> Completions:
        """Greedy completions (EOS included when produced) of the prompts in `part`."""
        examples = [part[b] for b in range(len(part))]
        prompts = [ex.prompt for ex in examples]
        longest = max(len(p) for p in prompts)
        new = self.cfg.max_new_tokens or self.limit - min(len(p) for p in prompts)
        model = objective.decoder()
        table = max_positions(model)
        if table is not None:  # the model's position table bounds the longest prompt's continuation
            new = min(new, table - longest)
        return greedy(model, examples, new, self.gen, self.dist)

    @torch.no_grad()
    def __call__(self, objective: Objective, step: int) -> dict[str, float]:
        """Decode every split's prompts and verify the answers; sums are reduced over ranks."""
        keys = [f"verified/{s}" for s in self.sets] + [
            f"check/{k}/{s}" for s in self.sets for k in self.checks
        ]
        sums = dict.fromkeys(keys, 0.0)
        counts = dict.fromkeys(self.sets, 0.0)
        tokens = dict.fromkeys(self.sets, 0.0)  # prefilled and generated, by every rank (padding copies too)
        for split, (ex, real) in self.sets.items():
            for start in range(0, len(ex), self.cfg.batch):
                part = ex.slice(start, min(start + self.cfg.batch, len(ex)))
                done = self._decode(objective, part)
                tokens[split] += done.prompt_tokens + done.new_tokens
                for b, completion in enumerate(done.tokens[: max(0, real - start)]):
                    example = part[b]
                    sums[f"verified/{split}"] += float(self.gen.verify(example, completion))
                    for k, ok in (self.gen.check(example, completion) if self.checks else {}).items():
                        sums[f"check/{k}/{split}"] += float(ok)
                    counts[split] += 1
        local = [sums[k] for k in keys] + [counts[s] for s in self.sets] + [tokens[s] for s in self.sets]
        total = self.dist.all_reduce(torch.tensor(local, dtype=torch.float64)).tolist()
        K, S = len(keys), len(self.sets)
        n = dict(zip(self.sets, total[K : K + S], strict=True))
        out = {k: v / max(n[k.rsplit("/", 1)[1]], 1.0) for k, v in zip(keys, total[:K], strict=True)}
        model = objective.decoder()
        n_params = model.cfg.param_count(model.vocab_size).active
        for split, t in zip(self.sets, total[K + S :], strict=True):
            out[f"inference_flops/{split}"] = (
                2.0 * n_params * t
            )  # 2·N_active per token run, padding copies too
        return out
