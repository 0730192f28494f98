"""RL-Wall solution trees (docs/papers/rl_wall.md; authors' code cfpark00/RL-Wall,
synthetic/make_data_synthetic_v5.ipynb).

A hidden world of four tables, drawn once from `world_seed`:
- T[s, a] (execution): the state that action a leads to from state s, uniform over the S states;
- PT[p, .] (plan): the first A entries of a random permutation of the P problem states, so a -> PT[p, a] is
  injective and the pair (p_i, p_i+1) fixes the action a_i;
- pi[s] ~ Dirichlet(alpha 1) (the biased training policy) and q[a] ~ Dirichlet(beta 1) (spurious contexts).

A problem: n ~ U{low..high} actions, s0 ~ U(S), p0 ~ U(P); step i draws a_i ~ pi[s_i] (uniform in rl and
test), s_i+1 = T[s_i, a_i], p_i+1 = PT[p_i, a_i] and a context c_i ~ q[a_i] (uniform in rl and test); then
`irrelevant` values x_j ~ U(K) follow. The prompt lists the plan (problem states) with the contexts; the
completion, after ':', names every action and executes it (the loss covers the completion and EOS only).
`engine sample` at world_seed 0 with actions_per_problem [2, 2] and irrelevant 2 prints

    BOS S 2 P 0 C 1 P 0 C 16 P 1 I 11 I 5 : -> S 2 A 4 S 2 A 9 S 6 EOS   (n=2)

(PT[0, 4] = 0 and PT[0, 9] = 1 name the actions; T[2, 4] = 2 and T[2, 9] = 6 are the states.)

Token ids: PAD BOS EOS : S P C A I 0..K-1 (K = the largest table size; 29 ids at the defaults). The authors'
vocabulary is `<unk> <bos> <pad> : S P C A I 0..19` and their completions end with `<pad>` (also their eos
token), so every id the paper emits is the same here: id 2 (their `<pad>`) is our EOS, id 0 (their `<unk>`,
never emitted) is our PAD, and our examples start with BOS (id 1), which their tokenizer does not add.

Splits: `train` samples fresh problems from the biased policy; `rl` and `test` are fixed pools of distinct
prompts (`rl_prompts`, `test_prompts`) drawn once with uniform actions and contexts from the world seed,
disjoint by construction (the rl pool skips every test prompt), and `sample` deals each pool out in shuffled
passes. The hidden tables come from numpy's legacy RandomState in the authors' call order, so world_seed 0
with the default sizes and alpha = beta = 0.3 gives the tables their notebook draws with seed 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from schemas.data import SolutionTree as SolutionTreeConfig

from .base import Example, Examples, UnknownSplit, Vocab, through_eos

COLON, S_, P_, C_, A_, I_ = range(3, 9)  # marker ids after PAD, BOS, EOS
NUM = len(SolutionTreeConfig.SPECIAL)  # id of the number token "0"
POOL_CHUNK = 256  # pool candidates per counter key: a pool is a prefix of any larger one
TEST_TAG, RL_TAG, REPAIR_TAG = 1, 2, 3


def _keyed(*key: int) -> np.random.Generator:
    """A Philox generator keyed by non-negative integers (the world's own streams, apart from sampling)."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([int(k) for k in key])))


@dataclass(frozen=True)
class World:
    """The hidden tables of one world seed."""

    execution: np.ndarray  # [S, A] T[s, a]: next state
    plan: np.ndarray  # [P, A] PT[p, a]: next problem state, injective in a
    policy: np.ndarray  # [S, A] pi[s]: training action probabilities
    context_probs: np.ndarray  # [A, C] q[a]: training context probabilities
    plan_action: np.ndarray  # [P, P] the action with PT[p, a] = p', or -1 when none


def make_world(cfg: SolutionTreeConfig) -> World:
    """The hidden tables, drawn as the authors do (legacy RandomState, their call order) from `world_seed`."""
    S, A, P, C = cfg.states, cfg.actions, cfg.problem_states, cfg.contexts
    r = np.random.RandomState(cfg.world_seed)
    execution = r.randint(0, S, size=(S, A))
    policy = r.dirichlet(np.ones(A) * cfg.alpha, size=S)
    plan = np.stack([r.permutation(P)[:A] for _ in range(P)])
    context_probs = r.dirichlet(np.ones(C) * cfg.beta, size=A)
    repair = _keyed(cfg.world_seed, REPAIR_TAG)
    policy, context_probs = _repair(policy, repair), _repair(context_probs, repair)
    plan_action = np.full((P, P), -1, dtype=np.int64)
    plan_action[np.arange(P)[:, None], plan] = np.arange(A)[None, :]
    return World(execution, plan, policy, context_probs, plan_action)


def _repair(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of a tiny-concentration Dirichlet draw that underflowed to 0/0 become one-hot at a random index.

    That is the draw's limit as the concentration goes to 0; at the defaults no row needs it.
    """
    rows, k = probs.shape
    at = rng.integers(0, k, size=rows)  # drawn always, so the stream does not depend on which rows are bad
    bad = ~np.isfinite(probs).all(1) | ~(probs.sum(1) > 0)
    out = probs.copy()
    out[bad] = 0.0
    out[bad, at[bad]] = 1.0
    return out


def _inverse_cdf(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn by uniforms `u` [...] from rows of cumulative probabilities `cum` [..., K] (last = 1)."""
    return (cum <= u[..., None]).sum(-1)


@dataclass
class _Walks:
    """Raw problems before tokenisation; steps past n are computed in lockstep and ignored."""

    n: np.ndarray  # [N] actions per problem
    states: np.ndarray  # [N, H+1]
    problem_states: np.ndarray  # [N, H+1]
    actions: np.ndarray  # [N, H]
    contexts: np.ndarray  # [N, H]
    irrelevant: np.ndarray  # [N, k]

    def take(self, idx: np.ndarray) -> _Walks:
        """The problems at `idx`."""
        return _Walks(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


class SolutionTree:
    """Generator of RL-Wall problems: `train` from the biased policy, `rl` and `test` from fixed uniform pools."""

    def __init__(self, cfg: SolutionTreeConfig):
        self.cfg = cfg
        self.vocab = Vocab(cfg.SPECIAL + tuple(str(i) for i in range(cfg.numbers)))
        self.world = make_world(cfg)
        self._cum_policy = np.cumsum(self.world.policy, axis=1)  # [S, A]
        self._cum_policy[:, -1] = 1.0
        self._cum_context = np.cumsum(self.world.context_probs, axis=1)  # [A, C]
        self._cum_context[:, -1] = 1.0
        test = self._pool(TEST_TAG, cfg.test_prompts, set())
        rl = self._pool(RL_TAG, cfg.rl_prompts, {self._key(test, i) for i in range(len(test))})
        self._pools = {"test": test, "rl": rl}

    # ---- sampling -------------------------------------------------------------------------------------

    def sample(
        self, rng: np.random.Generator, n: int, split: str = "train", length: int | None = None
    ) -> Examples:
        """n examples of `split` (train | rl | test); `length` pins the number of actions per problem."""
        if split not in self.cfg.SPLITS:
            raise UnknownSplit(f"no split {split!r}; solution_tree has {', '.join(self.cfg.SPLITS)}")
        lo, hi = self.cfg.actions_per_problem
        if length is not None and not lo <= length <= hi:
            raise ValueError(f"length {length} lies outside actions_per_problem [{lo}, {hi}]")
        if split == "train":
            return self._examples(self._walk(rng, n, uniform=False, length=length))
        return self._deal(rng, n, self._pools[split], length)

    def pool(self, split: str) -> Examples:
        """Every example of the fixed pool of `split` (rl | test), in pool order (meta `prompt_id`)."""
        if split not in self._pools:
            raise UnknownSplit(f"no pool {split!r}; solution_tree has pools {', '.join(self._pools)}")
        ex = self._pools[split]
        return ex.slice(0, len(ex))

    def _walk(self, rng: np.random.Generator, count: int, uniform: bool, length: int | None = None) -> _Walks:
        """`count` problems stepped in lockstep over the longest n; biased (train) or uniform (rl, test)."""
        cfg, w = self.cfg, self.world
        lo, hi = (length, length) if length is not None else cfg.actions_per_problem
        H = cfg.actions_per_problem[1]  # arrays keep the configured width so pools and batches concatenate
        n = rng.integers(lo, hi + 1, size=count)
        states = np.zeros((count, H + 1), dtype=np.int64)
        problem = np.zeros((count, H + 1), dtype=np.int64)
        states[:, 0] = rng.integers(0, cfg.states, size=count)
        problem[:, 0] = rng.integers(0, cfg.problem_states, size=count)
        steps = hi  # steps past every row's n are never shown
        actions = np.zeros((count, H), dtype=np.int64)
        if uniform:
            actions[:, :steps] = rng.integers(0, cfg.actions, size=(count, steps))
        else:
            u = rng.random((count, steps))
        T, PT = w.execution.ravel(), w.plan.ravel()
        for i in range(steps):
            if not uniform:
                actions[:, i] = _inverse_cdf(self._cum_policy[states[:, i]], u[:, i])
            states[:, i + 1] = T[states[:, i] * cfg.actions + actions[:, i]]
            problem[:, i + 1] = PT[problem[:, i] * cfg.actions + actions[:, i]]
        contexts = np.zeros((count, H), dtype=np.int64)
        if uniform:
            contexts[:, :steps] = rng.integers(0, cfg.contexts, size=(count, steps))
        else:
            contexts[:, :steps] = _inverse_cdf(
                self._cum_context[actions[:, :steps]], rng.random((count, steps))
            )
        irrelevant = rng.integers(0, cfg.numbers, size=(count, cfg.irrelevant))
        return _Walks(n, states, problem, actions, contexts, irrelevant)

    def _examples(self, walks: _Walks, prompt_id: np.ndarray | None = None) -> Examples:
        """Tokens, loss mask and meta of raw problems: a dense head, then a tail shifted to column 3 + 4n."""
        n, k = walks.n, self.cfg.irrelevant
        N, H = walks.actions.shape
        rows = np.arange(N)
        s, p, a, c = walks.states, walks.problem_states, walks.actions, walks.contexts
        # head: BOS S s0, then P p_i C c_i for every step i < H (steps >= n get overwritten by the tail)
        head = np.empty((N, 3 + 4 * H), dtype=np.int32)
        head[:, 0], head[:, 1], head[:, 2] = self.vocab.bos, S_, NUM + s[:, 0]
        block = head[:, 3:].reshape(N, H, 4)
        block[..., 0], block[..., 1], block[..., 2], block[..., 3] = P_, NUM + p[:, :H], C_, NUM + c
        # tail: P p_n, I x_j, ':', S s0, A a_i S s_i+1 for every step, EOS after step n, then PAD
        c0 = 3 + 2 * k  # column of the completion's first token within the tail
        Lt = c0 + 3 + 4 * H
        tail = np.empty((N, Lt), dtype=np.int32)
        tail[:, 0], tail[:, 1] = P_, NUM + p[rows, n]
        tail[:, 2 : c0 - 1 : 2], tail[:, 3 : c0 - 1 : 2] = I_, NUM + walks.irrelevant
        tail[:, c0 - 1], tail[:, c0], tail[:, c0 + 1] = COLON, S_, NUM + s[:, 0]
        block = tail[:, c0 + 2 : c0 + 2 + 4 * H].reshape(N, H, 4)
        block[..., 0], block[..., 1], block[..., 2], block[..., 3] = A_, NUM + a, S_, NUM + s[:, 1:]
        eos = c0 + 2 + 4 * n  # [N] EOS column within the tail
        col = np.arange(Lt)
        tail[col[None, :] > eos[:, None]] = self.vocab.pad
        tail[rows, eos] = self.vocab.eos

        lengths = 3 + 4 * n + eos + 1  # = 8n + 2k + 9
        width = int(lengths.max(initial=1))
        out = np.zeros((N, 3 + 4 * H + Lt), dtype=np.int32)
        out[:, : 3 + 4 * H] = head
        np.put(out, (rows * out.shape[1] + 3 + 4 * n)[:, None] + col[None, :], tail)
        tokens = np.ascontiguousarray(out[:, :width])
        cols = np.arange(width)
        start = 3 + 4 * n + c0  # first completion token
        loss_mask = (cols[None, :] >= start[:, None]) & (cols[None, :] < lengths[:, None])

        step = np.arange(H + 1)
        past = step[None, :] > n[:, None]  # [N, H+1] states past s_n
        meta = {
            "n": n,
            "states": np.where(past, -1, s),
            "problem_states": np.where(past, -1, p),
            "actions": np.where(past[:, 1:], -1, a),
            "contexts": np.where(past[:, 1:], -1, c),
            "irrelevant": walks.irrelevant,
            "prompt_id": np.full(N, -1, dtype=np.int64) if prompt_id is None else prompt_id,
        }
        return Examples(tokens, loss_mask, lengths, None, meta)

    # ---- fixed pools ----------------------------------------------------------------------------------

    @staticmethod
    def _key(ex: Examples, i: int) -> bytes:
        """The prompt of example i as bytes (the prompt fixes the completion)."""
        end = int(np.argmax(ex.loss_mask[i]))
        return ex.tokens[i, :end].tobytes()

    def _pool(self, tag: int, size: int, exclude: set[bytes]) -> Examples:
        """`size` distinct uniform prompts outside `exclude`, drawn in keyed chunks (a prefix of a larger pool).

        The validator keeps the prompt space at least twice the pools, so each chunk adds new prompts with
        probability bounded away from 0; the chunk cap is never reached in practice.
        """
        seen, kept, count = set(exclude), [], 0
        for chunk in range(16 + 64 * (-(-size // POOL_CHUNK))):
            walks = self._walk(_keyed(self.cfg.world_seed, tag, chunk), POOL_CHUNK, uniform=True)
            ex, new = self._examples(walks), []
            for i in range(POOL_CHUNK):
                key = self._key(ex, i)
                if key not in seen and count + len(new) < size:
                    seen.add(key)
                    new.append(i)
            kept.append(walks.take(np.array(new, dtype=np.int64)))
            count += len(new)
            if count == size:
                merged = _Walks(*(np.concatenate([getattr(w, f) for w in kept]) for f in _FIELDS))
                return self._examples(merged, prompt_id=np.arange(size))
        raise RuntimeError(
            f"found only {len(kept)} of {size} distinct prompts; the prompt space is too small"
        )

    def _deal(self, rng: np.random.Generator, n: int, pool: Examples, length: int | None) -> Examples:
        """n pool examples in shuffled passes over the pool (or over its problems with `length` actions)."""
        ids = np.arange(len(pool)) if length is None else np.flatnonzero(pool.meta["n"] == length)
        if len(ids) == 0:
            raise ValueError(f"the pool has no problem with {length} actions")
        passes = -(-n // len(ids))
        order = ids[np.argsort(rng.random((passes, len(ids))), axis=1)].ravel()[:n]
        lengths = pool.lengths[order]
        width = int(lengths.max(initial=0))
        return Examples(
            pool.tokens[order, :width],
            pool.loss_mask[order, :width],
            lengths,
            None,
            {k: v[order] for k, v in pool.meta.items()},
        )

    # ---- checking and showing -------------------------------------------------------------------------

    def solve(self, prompt: Sequence[int]) -> np.ndarray | None:
        """The one correct completion of a prompt (through EOS), by execution; None for a malformed prompt.

        The plan fixes each action (a_i is the action with PT[p_i, a_i] = p_i+1) and T fixes each state.
        """
        cfg, w = self.cfg, self.world
        t = np.asarray(prompt, dtype=np.int64)
        n, k = int((t == C_).sum()), int((t == I_).sum())
        if len(t) != 6 + 4 * n + 2 * k or t[0] != self.vocab.bos or t[-1] != COLON:
            return None
        markers = np.concatenate([[S_], np.tile([P_, C_], n), [P_], np.full(k, I_)])
        values = t[2:-1:2] - NUM  # s0, p0, c0, p1, ..., pn, x1..xk
        if not np.array_equal(t[1:-1:2], markers) or (values < 0).any() or (values >= cfg.numbers).any():
            return None
        s0, plan, ctx = int(values[0]), values[1 : 2 + 2 * n : 2], values[2 : 1 + 2 * n : 2]
        if s0 >= cfg.states or (plan >= cfg.problem_states).any() or (ctx >= cfg.contexts).any():
            return None
        actions = w.plan_action[plan[:-1], plan[1:]]
        if (actions < 0).any():  # no action leads from p_i to p_i+1: the prompt has no answer
            return None
        states = [s0]
        for a in actions:
            states.append(int(w.execution[states[-1], a]))
        out = np.empty(3 + 4 * n, dtype=np.int64)
        out[0], out[1], out[-1] = S_, NUM + s0, self.vocab.eos
        out[2:-1:4], out[3:-1:4], out[4:-1:4], out[5:-1:4] = A_, NUM + actions, S_, NUM + np.array(states[1:])
        return out

    def verify(self, example: Example, completion: Sequence[int]) -> bool:
        """Exact match of the completion through EOS with the executed plan (what follows EOS is not read)."""
        expected = self.solve(example.prompt)
        got = np.asarray(completion, dtype=np.int64).ravel()
        return (
            expected is not None
            and len(got) >= len(expected)
            and np.array_equal(got[: len(expected)], expected)
        )

    def answer(self, example: Example, completion: Sequence[int]) -> tuple[int, ...]:
        """The completion through its first EOS (what the verifier compares)."""
        return through_eos(completion, self.vocab.eos)

    def render(self, example: Example) -> str:
        """`BOS S s0 P p0 C c0 ... : -> S s0 A a0 ... EOS` with n and the pool index when there is one."""
        pid = int(example.meta["prompt_id"])
        where = f", prompt {pid}" if pid >= 0 else ""
        return (
            f"{self.vocab.decode(example.prompt)} -> {self.vocab.decode(example.answer)}"
            f"   (n={int(example.meta['n'])}{where})"
        )


_FIELDS = tuple(_Walks.__dataclass_fields__)
