"""Greedy decoding of answers to fixed prompts, scored by the data generator's own verifier, per split."""

from __future__ import annotations

import numpy as np
import torch

from engine.data.base import Examples, Generator
from engine.objectives.base import Objective
from engine.runtime.distributed import Dist
from schemas.evals import Verified as VerifiedConfig

from .exact_match import fixed_sets


class Verified:
    """`verified/<split>`: the fraction of greedy answers that `gen.verify` accepts; with `gen.check` (e.g.
    connectivity's decision and evidence) also `check/<key>/<split>`.

    Unlike exact_match, any right answer counts: another shortest path, another valid search trace, any
    correct Sudoku grid. Decoding is greedy with the whole sequence re-run per token (no KV cache), so it costs
    (answer length) forward passes per batch; every rank runs the same number of them. Coupled position ids of
    generated tokens are the example's own (as under teacher forcing); beyond the example they keep counting.
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

    def _decode(self, objective: Objective, part: Examples, device: torch.device) -> list[list[int]]:
        """Greedy completions (EOS included when produced) of the prompts in `part`."""
        B = len(part)
        prompt = np.array([len(part[b].prompt) for b in range(B)])
        tokens = torch.full((B, self.limit), self.gen.vocab.pad, dtype=torch.long)
        for b in range(B):
            tokens[b, : prompt[b]] = torch.from_numpy(part.tokens[b, : prompt[b]].astype(np.int64))
        positions = None
        if part.positions is not None:  # the example's ids, then counting on from its last
            positions = torch.zeros((B, self.limit), dtype=torch.long)
            for b in range(B):
                n = int(part.lengths[b])
                positions[b, :n] = torch.from_numpy(part.positions[b, :n].astype(np.int64))
                positions[b, n:] = positions[b, n - 1] + 1 + torch.arange(self.limit - n)
            positions = positions.to(device)
        tokens = tokens.to(device)
        cur = torch.from_numpy(prompt).to(device)
        done = cur >= self.limit
        steps = self.cfg.max_new_tokens or self.limit - int(prompt.min())
        rows = torch.arange(B, device=device)
        for _ in range(steps):
            width = int(cur.clamp(max=self.limit).max())
            pos = None if positions is None else positions[:, :width]
            logits = objective.next_logits(tokens[:, :width], pos)
            nxt = logits[rows, (cur - 1).clamp(max=width - 1)].argmax(-1)
            live = ~done
            tokens[rows[live], cur[live]] = nxt[live]
            cur = torch.where(live, cur + 1, cur)
            done = done | (live & (nxt == self.gen.vocab.eos)) | (cur >= self.limit)
            if not self.dist.all_reduce(torch.tensor([float((~done).sum())]))[0]:  # every rank is done
                break
        cur, tokens = cur.tolist(), tokens.tolist()
        return [tokens[b][prompt[b] : cur[b]] for b in range(B)]

    @torch.no_grad()
    def __call__(self, objective: Objective, step: int) -> dict[str, float]:
        """Decode every split's prompts and verify the answers; sums are reduced over ranks."""
        keys = [f"verified/{s}" for s in self.sets] + [
            f"check/{k}/{s}" for s in self.sets for k in self.checks
        ]
        sums = dict.fromkeys(keys, 0.0)
        counts = dict.fromkeys(self.sets, 0.0)
        for split, (ex, real) in self.sets.items():
            for start in range(0, len(ex), self.cfg.batch):
                part = ex.slice(start, min(start + self.cfg.batch, len(ex)))
                completions = self._decode(objective, part, self.dist.device)
                for b, completion in enumerate(completions[: max(0, real - start)]):
                    example = part[b]
                    sums[f"verified/{split}"] += float(self.gen.verify(example, completion))
                    for k, ok in (self.gen.check(example, completion) if self.checks else {}).items():
                        sums[f"check/{k}/{split}"] += float(ok)
                    counts[split] += 1
        total = self.dist.all_reduce(
            torch.tensor([sums[k] for k in keys] + [counts[s] for s in self.sets], dtype=torch.float64)
        ).tolist()
        n = dict(zip(self.sets, total[len(keys) :], strict=True))
        return {
            k: v / max(n[k.rsplit("/", 1)[1]], 1.0) for k, v in zip(keys, total[: len(keys)], strict=True)
        }
