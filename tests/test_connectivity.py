"""Property tests of the Bridge(d) connectivity generator (Let Me Think, docs/papers/let_me_think.md).

Hypothesis draws the depth, the strategy, the walk budget, the number of examples and the seed. The graph is
read back from the prompt tokens alone, so every invariant (two Bridge copies, one target reachable, valid
traces, the verifier's verdicts) is checked against what a model would see, not against the generator's
internals; the distribution tests compare sampled traces with the paper's closed forms and with the exact
length distributions of the config.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter

import numpy as np
import pytest
from helpers import train_in_process
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.base import Example, Examples, UnknownSplit
from engine.data.connectivity import Connectivity
from engine.data.stream import counter_rng
from schemas.data import Connectivity as ConnectivityConfig

STRATEGIES = ("shortest_path", "path", "dfs", "dfs_backtrack", "walk", "none")
SEEDS = st.integers(0, 2**63 - 1)
SPLITS = st.sampled_from(["train", "eval"])
FAST = settings(max_examples=30, deadline=None)


@st.composite
def configs(draw: st.DrawFn, max_depth: int = 5) -> ConnectivityConfig:
    """A feasible config: depth 1..max_depth, any strategy, a walk budget from 3d to 3d + 20."""
    depth = draw(st.integers(1, max_depth))
    strategy = draw(st.sampled_from(STRATEGIES))
    return ConnectivityConfig(
        depth=depth, strategy=strategy, walk_length=draw(st.integers(3 * depth, 3 * depth + 20))
    )


def sample(cfg: ConnectivityConfig, seed: int, n: int, split: str = "train") -> Examples:
    """n examples from a fresh counter RNG keyed by `seed`."""
    return Connectivity(cfg).sample(counter_rng(seed), n, split)


def identical(a: Examples, b: Examples) -> bool:
    """Whether two batches agree in every array and in their metadata."""
    arrays = [(a.tokens, b.tokens), (a.loss_mask, b.loss_mask), (a.lengths, b.lengths)]
    arrays += [(a.meta[k], b.meta[k]) for k in a.meta]
    return a.meta.keys() == b.meta.keys() and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in arrays
    )


def words(gen: Connectivity, ids) -> list[str]:
    """Token strings of token ids."""
    return [gen.vocab.tokens[int(i)] for i in ids]


def read(gen: Connectivity, ex: Example) -> tuple[list[tuple[int, int]], int, int, int]:
    """(edges, s, t1, t2) parsed from the prompt text the way the paper's format spells it."""
    text = " ".join(words(gen, ex.prompt))
    m = re.fullmatch(r"BOS graph : \[ ([\d ]+) \] task : (\d+) to (\d+) or (\d+) /", text)
    assert m, text
    ends = [int(x) for x in m[1].split()]
    return list(zip(ends[::2], ends[1::2], strict=True)), int(m[2]), int(m[3]), int(m[4])


def answer_groups(gen: Connectivity, ex: Example) -> tuple[list[int] | None, int]:
    """(work nodes or None when there is no work group, decision node) from the answer tokens."""
    text = " ".join(words(gen, ex.answer))
    m = re.fullmatch(r"(?:work : \[ ([\d ]+) \] )?decision : \[ (\d+) \] EOS", text)
    assert m, text
    return (None if m[1] is None else [int(x) for x in m[1].split()]), int(m[2])


def adjacency(edges: list[tuple[int, int]]) -> dict[int, set[int]]:
    """Neighbour sets of an edge list."""
    adj: dict[int, set[int]] = {}
    for u, v in edges:
        adj.setdefault(u, set()).add(v)
        adj.setdefault(v, set()).add(u)
    return adj


def distances(adj: dict[int, set[int]], s: int) -> dict[int, int]:
    """BFS distances from s (only the nodes reachable from s)."""
    dist, frontier = {s: 0}, [s]
    while frontier:
        nxt = []
        for v in frontier:
            for u in adj[v]:
                if u not in dist:
                    dist[u] = dist[v] + 1
                    nxt.append(u)
        frontier = nxt
    return dist


def is_walk(adj: dict[int, set[int]], trace: list[int]) -> bool:
    """Every consecutive pair is an edge."""
    return all(b in adj[a] for a, b in itertools.pairwise(trace))


def is_dfs_order(adj: dict[int, set[int]], order: list[int]) -> bool:
    """Whether some DFS from order[0] first visits the nodes in exactly this order (until its last node).

    The DFS may only step back from a node whose neighbours are all visited; each new node must be an
    unvisited neighbour of the node on top of the stack.
    """
    if len(set(order)) != len(order):
        return False
    visited, stack = {order[0]}, [order[0]]
    for v in order[1:]:
        while stack and not (adj[stack[-1]] - visited):
            stack.pop()
        if not stack or v not in adj[stack[-1]]:
            return False
        visited.add(v)
        stack.append(v)
    return True


def is_dfs_backtrack(adj: dict[int, set[int]], walk: list[int]) -> bool:
    """Whether the walk is a DFS that records every node it stands on: forward to an unvisited neighbour,
    or back to the node below on the stack once the current node has no unvisited neighbour."""
    visited, stack = {walk[0]}, [walk[0]]
    for v in walk[1:]:
        top = stack[-1]
        if v not in visited and v in adj[top]:
            visited.add(v)
            stack.append(v)
        elif len(stack) > 1 and v == stack[-2] and not (adj[top] - visited):
            stack.pop()
        else:
            return False
    return True


# ---- config, vocabulary, validation ---------------------------------------------------------------------


def test_vocabulary_is_the_papers_with_our_special_ids() -> None:
    cfg = ConnectivityConfig(depth=5)
    gen = Connectivity(cfg)
    assert len(gen.vocab) == cfg.vocab_size == 119  # the paper's size at d = 5
    assert (gen.vocab.pad, gen.vocab.bos, gen.vocab.eos) == (0, 1, 2)
    assert gen.vocab.tokens[:3] == ("PAD", "BOS", "EOS")
    paper = {"graph", "task", "work", "decision", "to", "or", ":", "[", "(", ",", ")", "]", "UNK", "/"}
    assert paper | {str(i) for i in range(102)} | {"PAD", "BOS", "EOS"} == set(gen.vocab.tokens)
    assert ConnectivityConfig(depth=2).vocab_size == 17 + 2 * 21


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"depth": 0}, "depth", "depth=0 is not a Bridge depth; need 1 <= depth"),
        ({"depth": -3, "strategy": "walk"}, "depth", "need 1 <= depth"),
        ({"depth": 101}, "depth", "<= 100"),
        ({"depth": 4, "strategy": "walk", "walk_length": 11}, "walk_length", "at least 12"),
        ({"depth": 2, "strategy": "walk", "walk_length": 5000}, "walk_length", "exceeds 1000"),
    ],
)
def test_infeasible_configs_are_rejected_naming_the_field(fields: dict, field: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        ConnectivityConfig(**fields)
    problems = err.value.errors()[0]["ctx"]["problems"]
    assert [f for f, _ in problems] == [field] and message in problems[0][1]


def test_walk_length_only_matters_for_walks() -> None:
    assert ConnectivityConfig(depth=5, strategy="dfs", walk_length=3).max_seq_len() > 0
    assert (
        ConnectivityConfig(depth=4, strategy="walk", walk_length=12).walk_length == 12
    )  # exactly 3d is fine


# ---- determinism, splits, shapes -------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 24), split=SPLITS)
def test_same_seed_same_examples_other_seed_others(
    cfg: ConnectivityConfig, seed: int, n: int, split: str
) -> None:
    a = sample(cfg, seed, n, split)
    assert identical(a, sample(cfg, seed, n, split))
    assert set(a.meta) == {"source", "target", "decoy", "work_length"}
    b = sample(cfg, seed + 1, n, split)
    assert not identical(a, b)
    assert not np.array_equal(a.tokens[:, : cfg.prompt_len], b.tokens[:, : cfg.prompt_len])


def test_splits_draw_different_examples_of_one_distribution() -> None:
    cfg = ConnectivityConfig(depth=2, strategy="dfs")
    gen = Connectivity(cfg)
    from engine.data.stream import eval_examples

    train = gen.sample(counter_rng(7), 300, "train")
    held = eval_examples(gen, 7, "train", "eval", None, 300)
    prompts = {tuple(r[: cfg.prompt_len]) for r in train.tokens}
    assert not prompts & {tuple(r[: cfg.prompt_len]) for r in held.tokens}  # N! labellings: no repeats
    assert abs(train.meta["work_length"].mean() - held.meta["work_length"].mean()) < 1.5
    with pytest.raises(UnknownSplit, match="no split 'test'; connectivity has train, eval"):
        gen.sample(counter_rng(0), 2, "test")
    with pytest.raises(ValueError, match="no length axis"):
        gen.sample(counter_rng(0), 2, "train", length=5)


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 24), split=SPLITS)
def test_shapes_padding_vocab_and_loss_mask(cfg: ConnectivityConfig, seed: int, n: int, split: str) -> None:
    gen = Connectivity(cfg)
    ex = gen.sample(counter_rng(seed), n, split)
    assert ex.tokens.dtype == np.int32 and ex.loss_mask.dtype == np.bool_ and ex.positions is None
    assert ((ex.tokens >= 0) & (ex.tokens < cfg.vocab_size)).all()
    real = np.arange(ex.tokens.shape[1])[None, :] < ex.lengths[:, None]
    assert (ex.tokens[~real] == gen.vocab.pad).all() and (ex.tokens[real] != gen.vocab.pad).all()
    assert ex.tokens.shape[1] == ex.lengths.max() <= cfg.max_seq_len()
    assert (ex.tokens[np.arange(n), ex.lengths - 1] == gen.vocab.eos).all()
    slash = gen.vocab.id("/")
    for i in range(n):
        e = ex[i]
        cut = int(np.flatnonzero(e.tokens == slash)[0])
        assert cut == cfg.prompt_len - 1 and (e.tokens == slash).sum() == 1
        np.testing.assert_array_equal(e.loss_mask, np.arange(len(e.tokens)) > cut)  # everything after `/`
        assert len(e.answer) == cfg.answer_len(int(ex.meta["work_length"][i]))


@FAST
@given(cfg=configs(max_depth=3), seed=SEEDS, n=st.integers(1, 6))
def test_render_is_the_papers_text_and_tokenises_back(cfg: ConnectivityConfig, seed: int, n: int) -> None:
    gen = Connectivity(cfg)
    ex = gen.sample(counter_rng(seed), n)
    for i in range(n):
        text = gen.render(ex[i])
        lines = text.split("\n")
        assert lines[0].startswith("graph: [") and lines[0].endswith("]")
        assert re.fullmatch(r"task: \d+ to \d+ or \d+ /", lines[1])
        tail = [f"decision: [{int(ex.meta['target'][i])}]"]
        assert lines[2:] == (tail if cfg.strategy == "none" else [lines[2], *tail])
        tokens = ["BOS", *re.findall(r"[A-Za-z]+|\d+|\S", text), "EOS"]
        assert tokens == words(gen, ex[i].tokens)


# ---- the graph ------------------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 12))
def test_two_bridge_copies_one_target_reachable(cfg: ConnectivityConfig, seed: int, n: int) -> None:
    gen, d = Connectivity(cfg), cfg.depth
    ex = gen.sample(counter_rng(seed), n)
    for i in range(n):
        edges, s, t1, t2 = read(gen, ex[i])
        assert len(edges) == 22 * d and len({frozenset(e) for e in edges}) == 22 * d  # no repeats
        adj = adjacency(edges)
        assert set(adj) == set(range(cfg.nodes))  # labels are a permutation of 0..N-1
        near = distances(adj, s)
        far_root = t2 if t1 in near else t1
        far = distances(adj, far_root)
        assert (t1 in near) != (t2 in near), "exactly one target is connected to s"
        for comp in (near, far):
            assert len(comp) == 10 * d + 1
            assert sum(len(adj[v]) for v in comp) == 2 * 11 * d  # 11d edges per copy
            degrees = Counter(len(adj[v]) for v in comp)  # s 3, junctions 5, dead-end tips 1, the rest 2
            assert degrees == Counter({3: 1, 5: d - 1, 1: d, 2: 8 * d + 1})
        target = t1 if t1 in near else t2
        assert near[target] == 3 * d, "shortest path 3d"
        far_source = next(v for v in far if len(adj[v]) == 3)  # the decoy copy's own s
        assert far[far_source] == 3 * d  # the decoy sits where t sits, at the far end of its copy
        assert (int(ex.meta["source"][i]), int(ex.meta["target"][i])) == (s, target)
        assert int(ex.meta["decoy"][i]) == far_root
        assert len(adj[s]) == 3 and len(adj[target]) == len(adj[far_root]) == 2


def test_labels_orientation_order_and_target_slot_are_uniform() -> None:
    cfg = ConnectivityConfig(depth=2, strategy="none")
    gen, n = Connectivity(cfg), 4000
    ex = gen.sample(counter_rng(3), n)
    N, M = cfg.nodes, 44
    s_first, s_pos, t1_target = [], [], []
    for i in range(n):
        edges, s, t1, _ = read(gen, ex[i])
        for j, (u, v) in enumerate(edges):
            if s in (u, v):
                s_first.append(u == s)
                s_pos.append(j)
        t1_target.append(t1 == int(ex.meta["target"][i]))
    se = 0.5 / np.sqrt(n)
    assert abs(np.mean(t1_target) - 0.5) < 4 * se  # t1/t2 in random order
    assert abs(np.mean(s_first) - 0.5) < 4 * 0.5 / np.sqrt(len(s_first))  # edges randomly oriented
    pos_sd = np.sqrt((M**2 - 1) / 12 / len(s_pos))
    assert abs(np.mean(s_pos) - (M - 1) / 2) < 4 * pos_sd  # edges randomly ordered
    sources = ex.meta["source"]
    assert abs(sources.mean() - (N - 1) / 2) < 4 * np.sqrt((N**2 - 1) / 12 / n)  # labels uniform
    assert len(set(sources.tolist())) == N


# ---- the traces -----------------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 12))
def test_every_trace_is_a_valid_exploration_for_its_strategy(
    cfg: ConnectivityConfig, seed: int, n: int
) -> None:
    gen, d = Connectivity(cfg), cfg.depth
    ex = gen.sample(counter_rng(seed), n)
    for i in range(n):
        edges, s, _, _ = read(gen, ex[i])
        adj = adjacency(edges)
        work, decision = answer_groups(gen, ex[i])
        target = int(ex.meta["target"][i])
        assert decision == target
        if cfg.strategy == "none":
            assert work is None and ex.meta["work_length"][i] == 0
            continue
        assert len(work) == ex.meta["work_length"][i]
        assert work[0] == s and work[-1] == target and target not in work[:-1]
        assert set(work) <= set(distances(adj, s))  # never leaves s's copy
        if cfg.strategy in ("shortest_path", "path", "dfs_backtrack", "walk"):
            assert is_walk(adj, work)
        if cfg.strategy == "shortest_path":
            assert len(work) == 3 * d + 1
        elif cfg.strategy == "path":
            assert len(set(work)) == len(work) and 3 * d + 1 <= len(work) <= 5 * d + 1
        elif cfg.strategy == "dfs":
            assert is_dfs_order(adj, work)
        elif cfg.strategy == "dfs_backtrack":
            assert is_dfs_backtrack(adj, work)
            assert is_dfs_order(adj, list(dict.fromkeys(work)))  # its first visits are a DFS order
        else:
            assert len(work) - 1 <= cfg.walk_length


def test_path_is_the_dfs_stack_and_backtracking_retraces_the_tree() -> None:
    """One random DFS (the same arc orders) read three ways: dfs = the first visits of the backtracking walk,
    and path = the stack that the walk leaves (pop on every step back), a simple path from s to t."""
    for d in (1, 3):
        gens = {
            s: Connectivity(ConnectivityConfig(depth=d, strategy=s)) for s in ("path", "dfs", "dfs_backtrack")
        }
        adj = adjacency([tuple(e) for e in gens["dfs"].edges.tolist()])
        codes = counter_rng(d).integers(0, 24, (300, d))
        runs = {s: g._traces(codes) for s, g in gens.items()}
        rows = {s: [r[:m] for r, m in zip(t.tolist(), k.tolist(), strict=True)] for s, (t, k) in runs.items()}
        for walk, order, path in zip(rows["dfs_backtrack"], rows["dfs"], rows["path"], strict=True):
            stack: list[int] = []
            for v in walk:
                if len(stack) > 1 and v == stack[-2]:
                    stack.pop()
                else:
                    stack.append(v)
            assert stack == path and list(dict.fromkeys(walk)) == order
            assert is_walk(adj, path) and len(set(path)) == len(path) and path[-1] == gens["dfs"].target


def step_by_step_dfs(gen: Connectivity, rng: np.random.Generator, n: int, strategy: str) -> list[tuple]:
    """The generator's former trace sampler, kept as the reference: a randomised DFS from s per example,
    all examples stepping together; each step records the top of the stack (dfs_backtrack every time, dfs
    the first time), then pushes a uniformly random unvisited neighbour or pops. At t the stack is `path`."""
    V, W = gen.size, gen.size + 1
    stack, sp = np.zeros((n, V), dtype=np.int64), np.zeros(n, dtype=np.int64)
    visited = np.zeros(n * W, dtype=bool)
    visited[V::W] = True
    out, k = np.zeros((n, 2 * V), dtype=np.int64), np.zeros(n, dtype=np.int64)
    live = np.arange(n)
    base = live * W
    while live.size:
        top = stack[live, sp[live]]
        at = base + top
        if strategy == "dfs_backtrack":
            out[live, k[live]] = top
            k[live] += 1
        elif strategy == "dfs":
            fresh = ~visited[at]
            rec = live[fresh]
            out[rec, k[rec]] = top[fresh]
            k[rec] += 1
        visited[at] = True
        going = top != gen.target
        if strategy == "path":
            done = live[~going]
            k[done] = sp[done] + 1
        live, top, base = live[going], top[going], base[going]
        cand = gen.nbr[top]
        free = ~visited[base[:, None] + cand]
        keys = np.where(free, rng.random(free.shape), -1.0)
        j = keys.argmax(1)
        push = keys[np.arange(len(live)), j] >= 0
        up, down = live[push], live[~push]
        sp[up] += 1
        stack[up, sp[up]] = cand[push, j[push]]
        sp[down] -= 1
    rows = stack if strategy == "path" else out
    return [tuple(r[:m]) for r, m in zip(rows.tolist(), k.tolist(), strict=True)]


def exact_step_by_step(gen: Connectivity, strategy: str) -> dict[tuple[int, ...], float]:
    """Every trace of the step-by-step DFS with its exact probability (branching on every uniform choice)."""
    adj = adjacency([(u, v) for u, v in gen.edges.tolist() if u < gen.size])
    law: dict[tuple[int, ...], float] = {}

    def go(stack: tuple[int, ...], seen: frozenset[int], trace: tuple[int, ...], p: float) -> None:
        top = stack[-1]
        if strategy == "dfs_backtrack" or (strategy == "dfs" and top not in seen):
            trace = (*trace, top)
        seen = seen | {top}
        if top == gen.target:
            key = stack if strategy == "path" else trace
            law[key] = law.get(key, 0.0) + p
            return
        free = sorted(adj[top] - seen)
        for u in free:
            go((*stack, u), seen, trace, p / len(free))
        if not free:
            go(stack[:-1], seen, trace, p)

    go((0,), frozenset(), (), 1.0)
    return law


def table_law(gen: Connectivity) -> dict[tuple[int, ...], float]:
    """The exact law of the tabled traces: every combination of arc orders (24^d, equally likely)."""
    d = gen.cfg.depth
    codes = np.array(list(itertools.product(range(24), repeat=d)))
    traces, k = gen._traces(codes)
    seen = Counter(tuple(r[:m]) for r, m in zip(traces.tolist(), k.tolist(), strict=True))
    return {t: c / len(codes) for t, c in seen.items()}


@pytest.mark.parametrize("strategy", ["path", "dfs", "dfs_backtrack"])
def test_tabled_traces_have_exactly_the_step_by_step_dfs_law(strategy: str) -> None:
    """The segment tables give every trace exactly the probability of the DFS that picks a uniformly random
    unvisited neighbour at each step (both enumerated, d = 1..3); the former sampler and the new draws
    (random words decoded into arc orders) both match that law in 6000 samples."""
    for d in (1, 2, 3):
        gen = Connectivity(ConnectivityConfig(depth=d, strategy=strategy))
        exact, tabled = exact_step_by_step(gen, strategy), table_law(gen)
        assert tabled.keys() == exact.keys()
        assert all(abs(tabled[t] - p) < 1e-12 for t, p in exact.items()), d
    n = 6000
    old = Counter(step_by_step_dfs(gen, counter_rng(5), n, strategy))
    raw = counter_rng(6).bit_generator.random_raw((1, n, gen.words))
    draws = gen._draws(raw[..., : gen.graph_words], raw[..., gen.graph_words :], [counter_rng(7)])
    traces, k = gen._traces(draws["codes"])
    new = Counter(tuple(r[:m]) for r, m in zip(traces.tolist(), k.tolist(), strict=True))
    for seen in (old, new):
        assert set(seen) <= set(exact)
        # Pearson chi-square over traces expected >= 5 times, the rare ones pooled into one bin
        expected = {t: n * p for t, p in exact.items()}
        common = [t for t, e in expected.items() if e >= 5]
        obs = [seen[t] for t in common] + [n - sum(seen[t] for t in common)]
        exp = [expected[t] for t in common] + [n - sum(expected[t] for t in common)]
        chi2 = sum((o - e) ** 2 / e for o, e in zip(obs, exp, strict=True) if e > 0)
        df = len(obs) - 1
        assert chi2 < df + 5 * np.sqrt(2 * df), (strategy, chi2, df)


def test_tied_keys_and_rejected_codes_are_redrawn_from_their_chunk() -> None:
    """An example whose label keys tie (or whose code word falls in Lemire's rejected range) is drawn again,
    whole, from its own chunk's generator; the other examples keep their draws."""
    gen = Connectivity(ConnectivityConfig(depth=2, strategy="dfs"))
    n, G, rngs = 3, gen.graph_words, [counter_rng(1), counter_rng(2)]
    raw = counter_rng(9).bit_generator.random_raw((2, n, gen.words))

    def decode(words: np.ndarray) -> dict[str, np.ndarray]:
        return gen._decode(words[..., :G], words[..., G:])

    assert decode(raw)["ok"].all()
    bad = raw.copy()
    bad[0, 1, 0] = (bad[0, 1, 0] & 0xFFFFFFFF) * 0x100000001  # label keys of nodes 0 and 1 equal
    bad[1, 1, G] = (bad[1, 1, G] >> np.uint64(32)) << np.uint64(32)  # code word of petal 0: 0, rejected
    assert decode(bad)["ok"].tolist() == [True, False, True, True, False, True]
    draws = gen._draws(bad[..., :G], bad[..., G:], rngs)
    redrawn = {1: counter_rng(1), 4: counter_rng(2)}
    for r in range(2 * n):
        row = (
            redrawn[r].bit_generator.random_raw(gen.words)[None] if r in redrawn else raw[r // n, r % n][None]
        )
        want = decode(row)
        assert want["ok"][0] and all(np.array_equal(draws[key][r], want[key][0]) for key in want)


def test_sample_chunks_rows_are_each_chunks_sample() -> None:
    """The stream's batched call gives chunk c's rows exactly as `sample(rngs[c], n)` does (padding aside)."""
    for strategy in STRATEGIES:
        cfg = ConnectivityConfig(depth=3, strategy=strategy, walk_length=15)
        gen = Connectivity(cfg)
        both = gen.sample_chunks([counter_rng(4, c) for c in range(3)], 5, "train")
        for c in range(3):
            one = gen.sample(counter_rng(4, c), 5, "train")
            part = both.slice(5 * c, 5 * c + 5)
            assert identical(one, part), strategy
        with pytest.raises(ValueError, match="need n >= 0"):
            gen.sample_chunks([counter_rng(0)], -1, "train")
        none = gen.sample(counter_rng(0), 0)
        assert none.tokens.shape == (0, cfg.prompt_len + cfg.answer_len(0)) and len(none.meta["source"]) == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_blocks_do_not_change_the_examples(strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Processing in blocks (several chunks, or part of a big one) gives what one block over all gives."""
    import engine.data.connectivity as module

    gen = Connectivity(ConnectivityConfig(depth=2, strategy=strategy, walk_length=12))
    rngs = lambda: [counter_rng(8, c) for c in range(5)]  # noqa: E731
    monkeypatch.setattr(module, "BLOCK", 64)
    small = [gen.sample_chunks(rngs(), 30), gen.sample(counter_rng(8), 150)]  # 2 chunks a block; 3 blocks
    monkeypatch.setattr(module, "BLOCK", 10**6)
    assert identical(small[0], gen.sample_chunks(rngs(), 30))
    assert identical(small[1], gen.sample(counter_rng(8), 150))


@pytest.mark.parametrize("d", [2, 3])
def test_a_random_dfs_order_is_a_path_with_the_papers_probability(d: int) -> None:
    """P(visit order is a valid path) = (2/3)(1/2)^(d-1); P(it is the shortest path) = (1/3)(1/4)^(d-1)."""
    n = 4000
    gen = Connectivity(ConnectivityConfig(depth=d, strategy="dfs"))
    ex = gen.sample(counter_rng(100 + d), n)
    valid = shortest = 0
    for i in range(n):
        edges, s, _, _ = read(gen, ex[i])
        work, _ = answer_groups(gen, ex[i])
        valid += is_walk(adjacency(edges), work)
        shortest += len(work) == 3 * d + 1
    for count, p in ((valid, (2 / 3) * 0.5 ** (d - 1)), (shortest, (1 / 3) * 0.25 ** (d - 1))):
        assert abs(count / n - p) < 3 * np.sqrt(p * (1 - p) / n), (count / n, p)


@pytest.mark.parametrize(("d", "L"), [(1, 3), (1, 7), (2, 9)])
def test_walks_are_uniform_walks_conditioned_to_hit_t_within_L(d: int, L: int) -> None:
    """Each walk's frequency matches prod(1/deg) / P(hit within L) over all first-hit walks (enumerated)."""
    gen = Connectivity(ConnectivityConfig(depth=d, strategy="walk", walk_length=L))
    adj = adjacency([tuple(e) for e in gen.edges.tolist()])
    exact: dict[tuple[int, ...], float] = {}

    def grow(walk: tuple[int, ...], p: float) -> None:
        if walk[-1] == gen.target:
            exact[walk] = p
        elif len(walk) <= L:
            for u in adj[walk[-1]]:
                grow((*walk, u), p / len(adj[walk[-1]]))

    grow((0,), 1.0)
    total = sum(exact.values())
    n = 6000
    walks, k = gen._walks(counter_rng(L).random((n, L)))
    seen = Counter(tuple(r[:m]) for r, m in zip(walks.tolist(), k.tolist(), strict=True))
    assert set(seen) <= set(exact)
    if L == 3 * d:
        assert len(exact) == 1 and seen == {(0, 1, 2, 10): n}  # only the shortest path fits
    big = [w for w, p in exact.items() if p / total > 0.02]
    for w in big:
        p = exact[w] / total
        assert abs(seen[w] / n - p) <= 4 * np.sqrt(p * (1 - p) / n), (w, seen[w] / n, p)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_trace_lengths_follow_the_exact_distribution(strategy: str) -> None:
    """The config's exact length law (which length_stats and max_seq_len use) matches 2000 samples."""
    for d in (1, 4):
        cfg = ConnectivityConfig(depth=d, strategy=strategy, walk_length=3 * d + 10)
        law = cfg.work_lengths()
        assert abs(sum(law.values()) - 1) < 1e-9
        k = sample(cfg, 11 * d, 2000).meta["work_length"]
        assert set(k.tolist()) <= set(law)
        assert k.max() <= max(law) and cfg.prompt_len + cfg.answer_len(int(k.max())) <= cfg.max_seq_len()
        # Pearson chi-square over the lengths expected >= 5 times, the rare ones pooled into one bin
        counts, expected = np.array([np.sum(k == j) for j in law]), 2000 * np.array(list(law.values()))
        rare = expected < 5
        obs = np.append(counts[~rare], counts[rare].sum())
        exp = np.append(expected[~rare], expected[rare].sum())
        chi2, df = ((obs - exp) ** 2 / np.maximum(exp, 1e-9)).sum(), max(len(obs) - 1, 1)
        assert chi2 < df + 4 * np.sqrt(2 * df), (d, chi2, df)
        lengths = sample(cfg, 12 * d, 2000).lengths.astype(float)
        mean, second = cfg.length_stats("train")
        assert (
            abs(lengths.mean() / mean - 1) < 0.02
            and abs((lengths * (lengths + 1)).mean() / second - 1) < 0.04
        )
    if strategy in ("path", "dfs", "dfs_backtrack"):  # the paper's means at d = 5: 19.9, ~29, ~38 edges
        law = ConnectivityConfig(depth=5, strategy=strategy).work_lengths()
        mean_edges = sum(j * q for j, q in law.items()) - 1
        assert mean_edges == pytest.approx({"path": 20, "dfs": 29, "dfs_backtrack": 38}[strategy])


# ---- the verifier ---------------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 8), data=st.data())
def test_verifier_accepts_own_answers_and_rejects_corrupted_ones(
    cfg: ConnectivityConfig, seed: int, n: int, data: st.DataObject
) -> None:
    gen = Connectivity(cfg)
    ex = gen.sample(counter_rng(seed), n)
    v = gen.vocab.id
    node = lambda label: len(cfg.WORDS) + label  # noqa: E731
    for i in range(n):
        e, answer = ex[i], ex[i].answer.tolist()
        target, decoy, s = (int(ex.meta[key][i]) for key in ("target", "decoy", "source"))
        verdict = gen.check(e, answer)
        assert verdict == {"decision": True, "evidence": cfg.strategy != "none"}
        assert gen.verify(e, answer) and gen.verify(e, answer[:-1])  # EOS optional
        assert gen.verify(e, [*answer, v("decision"), v(":"), v("["), node(decoy), v("]")])  # after EOS
        decision = [v("decision"), v(":"), v("[")]
        assert not gen.verify(e, [*decision, node(decoy), v("]"), v("EOS")])
        assert not gen.verify(e, [*decision, node(target), node(target), v("]")])  # two decision nodes
        assert not gen.verify(e, [*decision, node(target), v("]")] * 2)  # two decision groups
        assert not gen.verify(e, [*decision, node(target)])  # no closing bracket
        assert not gen.verify(e, [v("decision"), v("["), node(target), v("]")])  # no colon
        assert not gen.verify(e, [])
        if cfg.strategy == "none":
            continue
        work = answer[3 : answer.index(v("]"))]
        tail = answer[answer.index(v("]")) :]

        def with_work(nodes: list[int], e: Example = e, tail: list[int] = tail) -> dict[str, bool]:
            return gen.check(e, [v("work"), v(":"), v("["), *nodes, *tail])

        assert with_work(work) == {"decision": True, "evidence": True}
        assert not with_work(work[1:])["evidence"]  # does not start at s
        assert not with_work(work[:-1])["evidence"]  # does not end at t
        assert not with_work([*work, node(decoy)])["evidence"]
        j = data.draw(st.integers(1, len(work) - 1))
        assert not with_work([*work[:j], node(decoy), *work[j:]])["evidence"]  # jumps to the other copy
        assert not with_work([node(s), node(target)])["evidence"]  # t is 3d >= 3 steps away
        assert with_work([node(s), node(s), *work[1:]])["evidence"]  # repeats are allowed, as in the paper


@FAST
@given(depth=st.integers(1, 5), seed=SEEDS, n=st.integers(1, 8))
def test_verifier_accepts_every_strategys_certificate(depth: int, seed: int, n: int) -> None:
    """Same seed, same graphs: a trace from any strategy is evidence for the others' examples."""
    gens = {
        s: Connectivity(ConnectivityConfig(depth=depth, strategy=s, walk_length=3 * depth + 7))
        for s in STRATEGIES
    }
    batches = {s: g.sample(counter_rng(seed), n) for s, g in gens.items()}
    prompt = len(gens["dfs"].template)
    for i in range(n):
        prompts = {tuple(b[i].tokens[:prompt]) for b in batches.values()}
        assert len(prompts) == 1
        for mine, gen in gens.items():
            for other, b in batches.items():
                verdict = gen.check(batches[mine][i], b[i].answer)
                assert verdict == {"decision": True, "evidence": other != "none"}, (mine, other)


def test_parse_reads_the_papers_groups() -> None:
    gen = Connectivity(ConnectivityConfig(depth=1))
    v, node = gen.vocab.id, lambda label: len(ConnectivityConfig.WORDS) + label
    toks = [v("work"), v(":"), v("["), node(3), node(4), v("]"), v("work"), v(":"), v("["), node(5), v("]")]
    toks += [v("decision"), v(":"), v("["), v("]"), v("decision"), v(":"), v("["), node(7), v("]")]
    assert gen.parse(toks) == {"work": [3, 4, 5], "decision": [7]}
    assert gen.parse([v("work"), v(":"), v("["), node(1), v("EOS"), v("]")]) == {"work": [], "decision": []}


# ---- end to end -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_example_spec_trains_a_few_steps(tmp_path) -> None:
    from schemas import load_spec

    overrides = [
        f"run.output={tmp_path}",
        "stages.train.schedule.steps=4",
        "stages.train.schedule.warmup=1",
        "stages.train.batch.global=8",
        "stages.train.model.depth=1",
        "stages.train.logging.every=2",
        "stages.train.evals.0.examples=16",
        "stages.train.evals.1.examples=8",
    ]
    spec = load_spec("specs/connectivity.yaml", overrides)
    assert spec.stages["train"].data.depth == 3 and spec.stages["train"].data.strategy == "dfs"
    _, rows = train_in_process(spec)
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4]
    assert all(np.isfinite(r["loss"]) and 0 < r["loss"] < 2 * np.log(79) for r in logged)
    evals = [r for r in rows if "acc/eval" in r]
    assert evals
    assert logged[-1]["tokens"] > 0
