"""Property tests of the shortest-path generator (Mixture of Parrots, docs/papers/mixture_of_parrots.md).

Hypothesis draws the graph family (node range, labels, mean degree, min_distance, eval share, tie break); every
test checks an invariant that a wrong generator would break: the format and mask, connected graphs with the
configured edge count, the answer a shortest path (BFS written independently here), a verifier that accepts
every shortest path and nothing else, and train/eval graphs on both sides of the documented hash rule.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from helpers import train_in_process
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.data.base import Example, Examples, UnknownSplit
from engine.data.shortest_path import BAR, LABEL0, QUERY, ShortestPath
from engine.data.stream import counter_rng
from schemas import load_spec
from schemas.data import ShortestPath as ShortestPathConfig

FAST = settings(max_examples=25, deadline=None)
SEEDS = st.integers(0, 2**63 - 1)
SPLITS = st.sampled_from(["train", "eval"])
M64 = (1 << 64) - 1


@st.composite
def configs(draw: st.DrawFn) -> ShortestPathConfig:
    """A feasible family: a degree between tree and 3.5, min_distance 1-2 (1-3 from 8 nodes up, where even the
    densest drawn graphs have pairs at distance 3, by Ore's bound, and most random ones do)."""
    lo = draw(st.integers(6, 16))
    hi = draw(st.integers(lo, lo + 6))
    return ShortestPathConfig(
        nodes=(lo, hi),
        labels=draw(st.integers(hi, 80)),
        mean_degree=draw(st.floats(2.0, 3.5)),
        min_distance=draw(st.integers(1, 3 if lo >= 8 else 2)),
        eval_fraction=draw(st.sampled_from([0.05, 0.1, 0.5])),
        tie_break=draw(st.sampled_from(["smallest", "random"])),
    )


def sample(cfg: ShortestPathConfig, seed: int, n: int, split: str = "train") -> Examples:
    """n examples from a fresh counter RNG keyed by `seed`."""
    return ShortestPath(cfg).sample(counter_rng(seed), n, split)


def graph(e: Example) -> tuple[dict[int, set[int]], list[tuple[int, int]], int, int]:
    """(adjacency, edge list, s, t) of one example, in label numbers, read from its tokens."""
    toks = e.tokens.tolist()
    bar = toks.index(BAR)
    edges = [(a - LABEL0, b - LABEL0) for a, b in zip(toks[1:bar:2], toks[2:bar:2], strict=True)]
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    return adj, edges, toks[bar + 1] - LABEL0, toks[bar + 2] - LABEL0


def bfs(adj: dict[int, set[int]], s: int) -> dict[int, int]:
    """Distances from s to every node it reaches."""
    dist, todo = {s: 0}, deque([s])
    while todo:
        u = todo.popleft()
        for v in adj[u]:
            if v not in dist:
                dist[v] = dist[u] + 1
                todo.append(v)
    return dist


def all_shortest_paths(adj: dict[int, set[int]], s: int, t: int, limit: int = 50) -> list[list[int]]:
    """Up to `limit` shortest s-t paths, by walking down the BFS distances to t."""
    to_t = bfs(adj, t)
    out: list[list[int]] = []

    def extend(path: list[int]) -> None:
        if len(out) >= limit:
            return
        u = path[-1]
        if u == t:
            out.append(path)
            return
        for v in sorted(adj[u]):
            if to_t[v] == to_t[u] - 1:
                extend([*path, v])

    extend([s])
    return out


def mix(x: int) -> int:
    """splitmix64's finaliser in plain Python (the split rule, written independently of numpy)."""
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def split_hash(edges: list[tuple[int, int]], labels: int) -> float:
    """The documented split hash of a labelled edge set, in [0, 1)."""
    total = sum(mix(min(a, b) * labels + max(a, b)) for a, b in edges) & M64
    return (mix(total) >> 11) / 2**53


# ---- determinism and format -----------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16), split=SPLITS)
def test_same_seed_same_examples_other_seed_other(
    cfg: ShortestPathConfig, seed: int, n: int, split: str
) -> None:
    a, b = sample(cfg, seed, n, split), sample(cfg, seed, n, split)
    for x, y in [(a.tokens, b.tokens), (a.loss_mask, b.loss_mask), (a.lengths, b.lengths)]:
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert a.meta.keys() == {"nodes", "edges", "distance"}
    assert all(np.array_equal(a.meta[k], b.meta[k]) for k in a.meta)
    c = sample(cfg, seed + 1, n, split)
    assert a.tokens.shape != c.tokens.shape or not np.array_equal(a.tokens, c.tokens)


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16), split=SPLITS)
def test_format_lengths_and_mask(cfg: ShortestPathConfig, seed: int, n: int, split: str) -> None:
    ex = sample(cfg, seed, n, split)
    assert ex.tokens.dtype == np.int32 and ex.loss_mask.shape == ex.tokens.shape and len(ex) == n
    assert ((ex.tokens >= 0) & (ex.tokens < cfg.vocab_size)).all()
    assert ex.tokens.shape[1] == ex.lengths.max() <= cfg.max_seq_len()
    cols = np.arange(ex.tokens.shape[1])
    real = cols[None, :] < ex.lengths[:, None]  # a real prefix, then PAD only
    np.testing.assert_array_equal(ex.tokens != 0, real)
    for i in range(n):
        e = ex[i]
        toks, m, d = e.tokens.tolist(), int(e.meta["edges"]), int(e.meta["distance"])
        assert len(toks) == cfg.seq_len(int(e.meta["nodes"]), d) == 2 * m + d + 7
        assert toks[0] == 1 and toks[-1] == 2 and toks[2 * m + 1] == BAR and toks[2 * m + 4] == QUERY
        labels = toks[1 : 2 * m + 1] + toks[2 * m + 2 : 2 * m + 4] + toks[2 * m + 5 : -1]
        assert all(t >= LABEL0 for t in labels)
        assert np.flatnonzero(e.loss_mask).tolist() == list(range(2 * m + 5, len(toks)))  # path and EOS
        assert e.prompt.tolist() == toks[: 2 * m + 5]


# ---- the graphs -----------------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS)
def test_graphs_connected_simple_with_the_configured_edges(
    cfg: ShortestPathConfig, seed: int, split: str
) -> None:
    ex = sample(cfg, seed, 24, split)
    lo, hi = cfg.nodes
    for i in range(len(ex)):
        adj, edges, s, t = graph(ex[i])
        n, m = int(ex.meta["nodes"][i]), int(ex.meta["edges"][i])
        assert lo <= n <= hi and len(adj) == n  # every node has an edge (connected, n >= 2)
        assert all(0 <= v < cfg.labels for v in adj)
        canon = {(min(a, b), max(a, b)) for a, b in edges}
        assert len(canon) == len(edges) == m == cfg.edges(n)  # no duplicate edge
        assert all(a != b for a, b in edges)  # no self loop
        assert len(bfs(adj, s)) == n  # connected
        assert 2 * m / n == pytest.approx(max(2 * (n - 1) / n, cfg.mean_degree), abs=1 / n + 1e-9)


def test_degree_statistics_match_the_config() -> None:
    cfg = ShortestPathConfig()
    ex = sample(cfg, 11, 2000)
    mean_degree = 2 * ex.meta["edges"] / ex.meta["nodes"]
    assert abs(mean_degree.mean() - 3.0) < 0.05
    assert set(np.unique(ex.meta["nodes"])) == set(range(10, 21))  # the whole node range
    degrees = []
    for i in range(200):
        adj, *_ = graph(ex[i])
        degrees += [len(v) for v in adj.values()]
    assert min(degrees) >= 1 and np.mean(degrees) == pytest.approx(3.0, abs=0.05)
    assert 1.0 < np.var(degrees) < 4.0  # spread like a sparse random graph, not a near-regular one


# ---- answers and the verifier ---------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS)
def test_the_answer_is_a_shortest_path(cfg: ShortestPathConfig, seed: int, split: str) -> None:
    ex = sample(cfg, seed, 16, split)
    for i in range(len(ex)):
        adj, _, s, t = graph(ex[i])
        path = [x - LABEL0 for x in ex[i].answer[:-1].tolist()]
        dist = bfs(adj, s)[t]
        assert dist >= cfg.min_distance and dist == int(ex.meta["distance"][i])
        assert path[0] == s and path[-1] == t and len(path) == dist + 1
        assert all(b in adj[a] for a, b in zip(path, path[1:], strict=False))
        if cfg.tie_break == "smallest":  # the lexicographically smallest shortest path
            assert path == min(all_shortest_paths(adj, s, t, limit=10**6))


def test_query_pairs_cover_every_distance_and_random_ties_vary() -> None:
    cfg = ShortestPathConfig(tie_break="random")
    ex = sample(cfg, 3, 1000)
    hist = np.bincount(ex.meta["distance"])
    assert hist[:2].sum() == 0 and (hist[2:5] > 30).all()  # distances >= 2, and not only the farthest
    # the same graph and query, sampled under other seeds, gets other shortest paths when there are several
    gen = ShortestPath(cfg)
    e = next(ex[i] for i in range(len(ex)) if len(all_shortest_paths(*pick(graph(ex[i])))) > 1)
    record = internal(e, cfg)
    paths = {tuple(gen._paths(counter_rng(k), record)[0][0].tolist()) for k in range(40)}
    assert len(paths) > 1


def pick(g: tuple) -> tuple:
    """(adjacency, s, t) of graph()'s answer."""
    return g[0], g[2], g[3]


def internal(e: Example, cfg: ShortestPathConfig) -> dict[str, np.ndarray]:
    """The generator's internal record of one example's graph and query (node k = its k-th smallest label)."""
    adj, _, s, t = graph(e)
    labels = sorted(adj)
    idx = {v: k for k, v in enumerate(labels)}
    a = np.zeros((1, cfg.nodes[1], cfg.nodes[1]), dtype=bool)
    for u, vs in adj.items():
        a[0, idx[u], [idx[v] for v in vs]] = True
    lab = np.zeros((1, cfg.nodes[1]), dtype=np.int64)
    lab[0, : len(labels)] = labels
    return {
        "n": np.array([len(labels)]),
        "labels": lab,
        "adj": a,
        "s": np.array([idx[s]]),
        "t": np.array([idx[t]]),
    }


@FAST
@given(cfg=configs(), seed=SEEDS, data=st.data())
def test_verifier_accepts_every_shortest_path_and_nothing_else(
    cfg: ShortestPathConfig, seed: int, data: st.DataObject
) -> None:
    gen = ShortestPath(cfg)
    ex = gen.sample(counter_rng(seed), 8, data.draw(SPLITS))
    for i in range(len(ex)):
        e = ex[i]
        adj, _, s, t = graph(e)
        assert gen.verify(e, e.answer) and gen.verify(e, e.answer[:-1])  # with or without EOS
        assert gen.verify(e, [*e.answer.tolist(), 7, 9])  # what follows EOS does not count
        for path in all_shortest_paths(adj, s, t, limit=20):  # every shortest path, not only the generator's
            assert gen.verify(e, [LABEL0 + v for v in path] + [2])
        path = [x - LABEL0 for x in e.answer[:-1].tolist()]
        tok = [LABEL0 + v for v in path]
        assert not gen.verify(e, [])
        assert not gen.verify(e, tok[1:])  # wrong start
        assert not gen.verify(e, tok[:-1])  # stops short of t
        assert not gen.verify(e, [*tok[:-1], 2])
        # a detour u -> w -> u is a walk of the right ends, but not shortest
        w = next(iter(adj[path[0]]))
        assert not gen.verify(e, [tok[0], LABEL0 + w, *tok])
        # a hop that is no edge breaks the path (same length, right ends)
        if len(path) >= 3:
            k = data.draw(st.integers(1, len(path) - 2))
            bad = [v for v in adj if v not in adj[path[k - 1]] and v != path[k - 1]]
            if bad:
                broken = [*tok[:k], LABEL0 + bad[0], *tok[k + 1 :]]
                assert not gen.verify(e, broken)
        # a longer path between the right ends (through a neighbour of t that is farther from s)
        d, from_s = len(path) - 1, bfs(adj, s)
        far = [v for v in adj[t] if from_s[v] >= d]
        if far:
            longer = all_shortest_paths(adj, s, far[0], limit=1)[0] + [t]
            assert not gen.verify(e, [LABEL0 + v for v in longer])


# ---- splits ---------------------------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS)
def test_train_and_eval_graphs_lie_on_both_sides_of_the_hash_rule(cfg: ShortestPathConfig, seed: int) -> None:
    train, held = sample(cfg, seed, 24, "train"), sample(cfg, seed, 24, "eval")
    train_sets, eval_sets = set(), set()
    for ex, into, is_eval in ((train, train_sets, False), (held, eval_sets, True)):
        for i in range(len(ex)):
            _, edges, *_ = graph(ex[i])
            assert (split_hash(edges, cfg.labels) < cfg.eval_fraction) == is_eval
            into.add(frozenset((min(a, b), max(a, b)) for a, b in edges))
    assert not train_sets & eval_sets


def test_unknown_split_names_the_known_ones() -> None:
    with pytest.raises(UnknownSplit, match="no split 'test'; shortest_path has train, eval"):
        sample(ShortestPathConfig(), 0, 2, "test")


# ---- config: lengths and validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"min_distance": 4},
        {"nodes": (5, 8), "mean_degree": 2.5, "min_distance": 3},
        {"nodes": (30, 60), "labels": 60, "mean_degree": 4.0, "min_distance": 4},
    ],
)
def test_length_stats_estimate_within_ten_percent(fields: dict) -> None:
    cfg = ShortestPathConfig(**fields)
    t = sample(cfg, 21, 2000).lengths.astype(float)
    mean, second = cfg.length_stats("train")
    assert mean == pytest.approx(t.mean(), rel=0.1) and second == pytest.approx((t * (t + 1)).mean(), rel=0.1)
    assert cfg.length_stats("eval") == (mean, second)


def test_max_seq_len_is_reached_by_a_path_graph() -> None:
    """A tree (mean_degree at its least) with nodes=[n, n] and min_distance n-1 is a path: the bound is exact."""
    cfg = ShortestPathConfig(nodes=(6, 6), labels=6, mean_degree=2 * 5 / 6, min_distance=5)
    ex = sample(cfg, 0, 32)
    assert (ex.lengths == cfg.max_seq_len()).all() and (ex.meta["distance"] == 5).all()


def problems(err: ValidationError) -> list[tuple[str, str]]:
    """(field, message) of every problem a validation error reports (cross-field rules carry several)."""
    out = []
    for e in err.errors():
        found = e.get("ctx", {}).get("problems")
        out += [tuple(x) for x in found] if found else [(".".join(map(str, e["loc"])), e["msg"])]
    return out


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"labels": 16}, "labels", "16 labels cannot name the 20 nodes"),
        ({"nodes": (10, 20), "min_distance": 7}, "min_distance", "no two nodes are more than 6 apart"),
        ({"nodes": (10, 12), "min_distance": 6}, "min_distance", "have a pair at distance >= 6"),
        ({"mean_degree": 1.5}, "mean_degree", "the least a connected graph of 20 nodes has"),
        ({"nodes": (4, 6), "mean_degree": 3.0}, "mean_degree", "no pair at distance >= 2"),
        ({"nodes": (4, 6), "mean_degree": 3.5, "min_distance": 1}, "mean_degree", "which has 6 pairs"),
        ({"nodes": (9, 3)}, "nodes", "not a range of node counts"),
        ({"eval_fraction": 0.0}, "eval_fraction", "greater than or equal to 0.01"),
    ],
)
def test_infeasible_families_are_rejected(fields: dict, where: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        ShortestPathConfig(**fields)
    assert any(field == where and message in text for field, text in problems(err.value)), problems(err.value)


@pytest.mark.slow
def test_spec_trains_a_few_steps_and_scores_both_splits(tmp_path, one_thread) -> None:

    spec = load_spec(
        "specs/shortest_path.yaml",
        [
            f"run.output={tmp_path}",
            "stages.train.schedule.steps=4",
            "stages.train.schedule.warmup=1",
            "stages.train.logging.every=2",
            "stages.train.batch.global=8",
            "stages.train.evals.0.examples=16",
            "stages.train.evals.1.examples=8",
        ],
    )
    results, rows = train_in_process(spec)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert set(results["train"]) >= {"acc/train", "acc/eval"}
