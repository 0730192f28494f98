"""Property tests of the RL-Wall solution-tree generator (docs/papers/rl_wall.md).

Hypothesis draws the world (table sizes, actions per problem, irrelevant values, alpha, beta, world seed, pool
sizes), the sampling seed and the split; every test checks an invariant that a wrong generator would break.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import train_in_process
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.data.base import Example, Examples, UnknownSplit
from engine.data.solution_tree import A_, C_, COLON, I_, NUM, P_, S_, SolutionTree, make_world
from engine.data.stream import Stream, counter_rng, eval_examples
from schemas import SpecError, load_spec
from schemas.data import SolutionTree as SolutionTreeConfig

SPLITS = st.sampled_from(["train", "rl", "test"])
SEEDS = st.integers(0, 2**63 - 1)
FAST = settings(max_examples=25, deadline=None)


@st.composite
def configs(draw: st.DrawFn) -> SolutionTreeConfig:
    """A feasible config: problem_states >= actions, and a prompt space at least twice the two pools."""
    actions = draw(st.integers(1, 12))
    lo = draw(st.integers(1, 6))
    fields = dict(
        actions=actions,
        states=draw(st.integers(1, 24)),
        problem_states=draw(st.integers(actions, 24)),
        contexts=draw(st.integers(1, 24)),
        actions_per_problem=(lo, draw(st.integers(lo, lo + 4))),
        irrelevant=draw(st.integers(0, 6)),
        alpha=draw(st.sampled_from([1e-6, 0.05, 0.3, 1.0, 5.0])),
        beta=draw(st.sampled_from([1e-6, 0.05, 0.3, 1.0, 5.0])),
        world_seed=draw(st.integers(0, 2**31)),
        rl_prompts=draw(st.integers(1, 48)),
        test_prompts=draw(st.integers(1, 48)),
    )
    try:
        return SolutionTreeConfig(**fields)
    except ValueError:  # a prompt space smaller than twice the pools (tiny tables, no irrelevant values)
        assume(False)


def sample(cfg: SolutionTreeConfig, seed: int, n: int, split: str = "train", length: int | None = None):
    """n examples from a fresh generator and a fresh counter RNG keyed by `seed`."""
    return SolutionTree(cfg).sample(counter_rng(seed), n, split, length=length)


def identical(a: Examples, b: Examples) -> bool:
    """Whether two batches agree in every array (shapes and dtypes included) and in their metadata."""
    if a.meta.keys() != b.meta.keys() or a.positions is not None or b.positions is not None:
        return False
    pairs = [(a.tokens, b.tokens), (a.loss_mask, b.loss_mask), (a.lengths, b.lengths)]
    pairs += [(a.meta[k], b.meta[k]) for k in a.meta]
    return all(x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in pairs)


def parse(e: Example) -> dict[str, np.ndarray]:
    """Read s0, the plan, the contexts and the irrelevant values back from the prompt's fixed layout."""
    n, k = int(e.meta["n"]), len(e.meta["irrelevant"])
    t = e.prompt
    assert len(t) == 6 + 4 * n + 2 * k
    return {
        "s0": t[2] - NUM,
        "plan": t[4 : 5 + 4 * n : 4] - NUM,
        "contexts": t[6 : 4 + 4 * n : 4] - NUM,
        "irrelevant": t[6 + 4 * n : -1 : 2] - NUM,
    }


# ---- determinism and the world -------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seeds=st.lists(SEEDS, min_size=2, max_size=2, unique=True), n=st.integers(1, 32))
def test_same_seed_same_examples_other_seed_other_examples(cfg, seeds, n) -> None:
    for split in ("train", "rl", "test"):
        a, b = sample(cfg, seeds[0], n, split), sample(cfg, seeds[0], n, split)
        assert identical(a, b)
        assert set(a.meta) == {
            "n",
            "states",
            "problem_states",
            "actions",
            "contexts",
            "irrelevant",
            "prompt_id",
        }
    if cfg.distinct_prompts(cap=10**9) > 10**6:  # a world where two batches of 32 can hardly coincide
        assert not identical(sample(cfg, seeds[0], 32), sample(cfg, seeds[1], 32))
    if cfg.test_prompts >= 16:  # another seed deals the pool in another order
        a, b = sample(cfg, seeds[0], 16, "test"), sample(cfg, seeds[1], 16, "test")
        assert not np.array_equal(a.meta["prompt_id"], b.meta["prompt_id"])


@FAST
@given(cfg=configs())
def test_world_comes_from_the_world_seed_only(cfg) -> None:
    one, two = SolutionTree(cfg), SolutionTree(cfg)
    for name in ("execution", "plan", "policy", "context_probs", "plan_action"):
        np.testing.assert_array_equal(getattr(one.world, name), getattr(two.world, name))
    for split in ("rl", "test"):
        assert identical(one.pool(split), two.pool(split))
    w = one.world
    S, A, P, C = cfg.states, cfg.actions, cfg.problem_states, cfg.contexts
    assert w.execution.shape == (S, A) and ((w.execution >= 0) & (w.execution < S)).all()
    assert w.plan.shape == (P, A) and ((w.plan >= 0) & (w.plan < P)).all()
    for probs, shape in ((w.policy, (S, A)), (w.context_probs, (A, C))):
        assert probs.shape == shape and np.isfinite(probs).all() and (probs >= 0).all()
        np.testing.assert_allclose(probs.sum(1), 1.0)
    other = SolutionTree(cfg.model_copy(update={"world_seed": cfg.world_seed + 1})).world
    if S >= 2 and S * A >= 16:
        assert not np.array_equal(w.execution, other.execution)


def test_default_world_is_the_authors_seed_0_draw() -> None:
    """The tables replay the authors' notebook cell (np.random.seed(0), then the same four calls)."""
    w = make_world(SolutionTreeConfig())
    r = np.random.RandomState(0)
    np.testing.assert_array_equal(w.execution, r.randint(0, 20, size=(20, 20)))
    np.testing.assert_array_equal(w.policy, r.dirichlet(np.ones(20) * 0.3, size=20))
    np.testing.assert_array_equal(w.plan, np.stack([r.permutation(20)[:20] for _ in range(20)]))
    np.testing.assert_array_equal(w.context_probs, r.dirichlet(np.ones(20) * 0.3, size=20))


# ---- shapes, format and lengths ------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 40), split=SPLITS)
def test_shapes_padding_vocabulary_and_lengths(cfg, seed, n, split) -> None:
    ex = sample(cfg, seed, n, split)
    gen = SolutionTree(cfg)
    assert len(gen.vocab) == cfg.vocab_size
    assert ex.tokens.dtype == np.int32 and ex.loss_mask.dtype == np.bool_ and ex.positions is None
    assert ex.tokens.shape == ex.loss_mask.shape == (n, ex.lengths.max())
    assert ((ex.tokens >= 0) & (ex.tokens < cfg.vocab_size)).all()
    cols = np.arange(ex.tokens.shape[1])
    real = cols[None, :] < ex.lengths[:, None]
    assert (ex.tokens[~real] == gen.vocab.pad).all() and (ex.tokens[real] != gen.vocab.pad).all()
    lo, hi = cfg.actions_per_problem
    assert ((ex.meta["n"] >= lo) & (ex.meta["n"] <= hi)).all()
    np.testing.assert_array_equal(ex.lengths, 8 * ex.meta["n"] + 2 * cfg.irrelevant + 9)
    assert ex.lengths.max() <= cfg.max_seq_len()
    assert all(v.shape[0] == n for v in ex.meta.values())


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 24), split=SPLITS)
def test_format_and_loss_mask_on_the_completion_only(cfg, seed, n, split) -> None:
    ex = sample(cfg, seed, n, split)
    vocab = SolutionTree(cfg).vocab
    for i in range(n):
        e, m = ex[i], int(ex.meta["n"][i])
        s, p = ex.meta["states"][i], ex.meta["problem_states"][i]
        a, c = ex.meta["actions"][i], ex.meta["contexts"][i]
        prompt = [vocab.bos, S_, NUM + s[0]]
        for j in range(m):
            prompt += [P_, NUM + p[j], C_, NUM + c[j]]
        prompt += [P_, NUM + p[m]]
        for x in ex.meta["irrelevant"][i]:
            prompt += [I_, NUM + x]
        prompt.append(COLON)
        answer = [S_, NUM + s[0]]
        for j in range(m):
            answer += [A_, NUM + a[j], S_, NUM + s[j + 1]]
        answer.append(vocab.eos)
        assert e.tokens.tolist() == prompt + answer
        assert e.loss_mask.tolist() == [False] * len(prompt) + [True] * len(answer)  # after ':' through EOS
        assert e.prompt.tolist() == prompt and e.answer.tolist() == answer
        assert (
            (s[m + 1 :] == -1).all()
            and (p[m + 1 :] == -1).all()
            and (a[m:] == -1).all()
            and (c[m:] == -1).all()
        )
        assert ((s[: m + 1] < cfg.states) & (p[: m + 1] < cfg.problem_states)).all()
        assert ((a[:m] < cfg.actions) & (c[:m] < cfg.contexts)).all() and (a[:m] >= 0).all()
        assert ((ex.meta["irrelevant"][i] >= 0) & (ex.meta["irrelevant"][i] < cfg.numbers)).all()


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS, data=st.data())
def test_length_pins_the_number_of_actions(cfg, seed, split, data) -> None:
    lo, hi = cfg.actions_per_problem
    length = data.draw(st.integers(lo, hi))
    gen = SolutionTree(cfg)
    if split != "train" and not (gen.pool(split).meta["n"] == length).any():
        with pytest.raises(ValueError, match=f"no problem with {length} actions"):
            gen.sample(counter_rng(seed), 4, split, length=length)
        return
    ex = gen.sample(counter_rng(seed), 8, split, length=length)
    assert (ex.meta["n"] == length).all() and (ex.lengths == cfg.seq_len(length)).all()
    with pytest.raises(ValueError, match="outside actions_per_problem"):
        gen.sample(counter_rng(seed), 4, split, length=hi + 1)


def test_unknown_split_names_the_known_ones() -> None:
    gen = SolutionTree(SolutionTreeConfig())
    with pytest.raises(UnknownSplit, match="solution_tree has train, rl, test"):
        gen.sample(counter_rng(0), 4, "eval")
    with pytest.raises(UnknownSplit, match="no pool 'train'"):
        gen.pool("train")


@FAST
@given(cfg=configs(), seed=SEEDS)
def test_max_seq_len_is_reached_and_never_exceeded(cfg, seed) -> None:
    hi = cfg.actions_per_problem[1]
    ex = sample(cfg, seed, 4, "train", length=hi)
    assert ex.lengths.max() == cfg.max_seq_len()
    for split in ("rl", "test"):
        assert SolutionTree(cfg).pool(split).lengths.max() <= cfg.max_seq_len()


@pytest.mark.parametrize("split", ["train", "rl", "test"])
def test_length_stats_match_2000_samples(split: str) -> None:
    cfg = SolutionTreeConfig(actions_per_problem=(2, 12), irrelevant=4)
    ex = sample(cfg, 7, 2000, split)
    t = ex.lengths.astype(np.float64)
    mean, mean_t_t1 = cfg.length_stats(split)
    assert abs(t.mean() / mean - 1) < (0.02 if split == "train" else 0.1)
    assert abs((t * (t + 1)).mean() / mean_t_t1 - 1) < (0.04 if split == "train" else 0.1)


# ---- the task's invariants -----------------------------------------------------------------------------


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 32), split=SPLITS)
def test_plan_fixes_the_actions_and_execution_reproduces_the_states(cfg, seed, n, split) -> None:
    gen = SolutionTree(cfg)
    w = gen.world
    for p in range(cfg.problem_states):  # a -> PT[p, a] is injective: (p_i, p_i+1) names one action
        assert len(set(w.plan[p].tolist())) == cfg.actions
        assert (w.plan[p, w.plan_action[p, w.plan[p]]] == w.plan[p]).all()
    ex = gen.sample(counter_rng(seed), n, split)
    for i in range(n):
        e, m = ex[i], int(ex.meta["n"][i])
        read = parse(e)
        plan = read["plan"]
        actions = ex.meta["actions"][i][:m]
        np.testing.assert_array_equal(w.plan_action[plan[:-1], plan[1:]], actions)  # the plan fixes a_i
        np.testing.assert_array_equal(w.plan[plan[:-1], actions], plan[1:])
        states = [int(read["s0"])]
        for a in actions:
            states.append(int(w.execution[states[-1], a]))
        np.testing.assert_array_equal(e.answer[1:-1:4] - NUM, states)  # executing reproduces every S
        np.testing.assert_array_equal(e.answer[3:-1:4] - NUM, actions)
        np.testing.assert_array_equal(gen.solve(e.prompt), e.answer)  # the prompt alone determines it


@FAST
@given(cfg=configs(), seed=SEEDS, n=st.integers(1, 16), split=SPLITS, data=st.data())
def test_verifier_accepts_the_answer_and_rejects_corruptions(cfg, seed, n, split, data) -> None:
    gen = SolutionTree(cfg)
    ex = gen.sample(counter_rng(seed), n, split)
    for i in range(n):
        e = ex[i]
        answer, m = e.answer.copy(), int(e.meta["n"])
        assert gen.verify(e, answer) and gen.verify(e, answer.tolist())
        assert gen.verify(e, np.concatenate([answer, [S_, NUM]]))  # what follows EOS is not read
        assert not gen.verify(e, answer[:-1])  # no EOS
        assert not gen.verify(e, [])
        assert not gen.verify(
            e, np.concatenate([answer[:-1], [A_, NUM, S_, NUM, gen.vocab.eos]])
        )  # a step too many
        j = data.draw(st.integers(0, m))  # a state token: S s_j
        if cfg.states > 1:
            bad = answer.copy()
            bad[1 + 4 * j] = (
                NUM + (answer[1 + 4 * j] - NUM + data.draw(st.integers(1, cfg.states - 1))) % cfg.states
            )
            assert not gen.verify(e, bad)
        j = data.draw(st.integers(0, m - 1))  # an action token: A a_j
        if cfg.actions > 1:
            bad = answer.copy()
            bad[3 + 4 * j] = (
                NUM + (answer[3 + 4 * j] - NUM + data.draw(st.integers(1, cfg.actions - 1))) % cfg.actions
            )
            assert not gen.verify(e, bad)
        bad = answer.copy()
        bad[data.draw(st.integers(0, len(answer) - 2))] = COLON  # a marker where another token belongs
        assert not gen.verify(e, bad)


def test_a_prompt_that_no_plan_fits_has_no_answer() -> None:
    cfg = SolutionTreeConfig(actions=5, problem_states=20)  # each p reaches only 5 of the 20 problem states
    gen = SolutionTree(cfg)
    e = gen.sample(counter_rng(3), 1)[0]
    p0 = int(parse(e)["plan"][0])
    unreachable = int(np.flatnonzero(gen.world.plan_action[p0] < 0)[0])
    tokens = e.tokens.copy()
    tokens[8] = NUM + unreachable  # p1
    broken = Example(tokens, e.loss_mask, None, e.meta)
    assert gen.solve(broken.prompt) is None and not gen.verify(broken, e.answer)


def chi2(counts: np.ndarray) -> float:
    """Pearson's statistic of counts against the uniform distribution."""
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def test_test_actions_and_contexts_are_uniform_and_train_follows_pi_and_q() -> None:
    cfg = SolutionTreeConfig(test_prompts=5000, rl_prompts=3000)
    gen = SolutionTree(cfg)
    for split in ("test", "rl"):
        pool = gen.pool(split)
        for key, k in (("actions", cfg.actions), ("contexts", cfg.contexts)):
            values = pool.meta[key][pool.meta[key] >= 0]
            assert chi2(np.bincount(values, minlength=k)) < 50.0, (split, key)  # chi2(19): P(> 50) ~ 1e-4
        # and the context does not depend on the action
        a, c = pool.meta["actions"], pool.meta["contexts"]
        joint = np.zeros((cfg.actions, cfg.contexts))
        np.add.at(joint, (a[a >= 0], c[a >= 0]), 1)
        expected = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True) / joint.sum()
        assert ((joint - expected) ** 2 / expected).sum() < 361 + 6 * np.sqrt(2 * 361)  # chi2(19*19)
    ex = gen.sample(counter_rng(11), 20_000)  # train: actions ~ pi[s], contexts ~ q[a]
    s, a, c = ex.meta["states"][:, :-1], ex.meta["actions"], ex.meta["contexts"]
    live = a >= 0
    assert chi2(np.bincount(a[live], minlength=cfg.actions)) > 1000  # far from uniform
    for table, rows, cols in ((gen.world.policy, s, a), (gen.world.context_probs, a, c)):
        counts = np.zeros_like(table)
        np.add.at(counts, (rows[live], cols[live]), 1)
        seen = counts.sum(1) >= 500
        empirical = counts[seen] / counts[seen].sum(1, keepdims=True)
        assert seen.all() and np.abs(empirical - table[seen]).sum(1).max() < 0.15  # total variation x2


# ---- splits --------------------------------------------------------------------------------------------


@FAST
@given(cfg=configs())
def test_rl_and_test_pools_are_distinct_and_disjoint(cfg) -> None:
    gen = SolutionTree(cfg)
    prompts = {}
    for split, size in (("test", cfg.test_prompts), ("rl", cfg.rl_prompts)):
        pool = gen.pool(split)
        assert len(pool) == size
        np.testing.assert_array_equal(pool.meta["prompt_id"], np.arange(size))
        prompts[split] = {pool[i].prompt.tobytes() for i in range(size)}
        assert len(prompts[split]) == size  # distinct within the pool
    assert not prompts["rl"] & prompts["test"]  # and disjoint


def test_pools_force_a_collision_and_stay_disjoint() -> None:
    """A prompt space of 128 with 28 test prompts: the rl pool's own draws hit some, and it skips them."""
    cfg = SolutionTreeConfig(
        states=2,
        actions=2,
        problem_states=2,
        contexts=2,
        irrelevant=3,
        actions_per_problem=(1, 1),
        rl_prompts=20,
        test_prompts=28,
    )
    gen = SolutionTree(cfg)
    rl, test = gen.pool("rl"), gen.pool("test")
    rl_set = {rl[i].prompt.tobytes() for i in range(len(rl))}
    test_set = {test[i].prompt.tobytes() for i in range(len(test))}
    assert len(rl_set) == 20 and len(test_set) == 28 and not rl_set & test_set
    alone = SolutionTree(cfg.model_copy(update={"test_prompts": 1})).pool("rl")  # fewer test prompts to skip
    assert not identical(alone, rl)  # so a collision did happen and was skipped


@FAST
@given(cfg=configs())
def test_a_pool_is_a_prefix_of_a_larger_one_and_ignores_the_other_pool(cfg) -> None:
    small = SolutionTree(cfg.model_copy(update={"test_prompts": max(1, cfg.test_prompts // 2)})).pool("test")
    full = SolutionTree(cfg).pool("test")
    assert identical(small, full.slice(0, len(small)))
    if cfg.distinct_prompts(cap=10**12) > 10**9:  # no test prompt to skip: rl does not depend on test_prompts
        fewer = cfg.model_copy(update={"test_prompts": 1})
        assert identical(SolutionTree(fewer).pool("rl"), SolutionTree(cfg).pool("rl"))


@FAST
@given(cfg=configs(), seed=SEEDS, extra=st.integers(0, 40), split=st.sampled_from(["rl", "test"]))
def test_sampling_a_pool_deals_it_out_in_shuffled_passes(cfg, seed, extra, split) -> None:
    gen = SolutionTree(cfg)
    size = len(gen.pool(split))
    ex = gen.sample(counter_rng(seed), 2 * size + extra, split)
    ids = ex.meta["prompt_id"]
    assert sorted(ids[:size]) == list(range(size)) and sorted(ids[size : 2 * size]) == list(range(size))
    counts = np.bincount(ids, minlength=size)
    assert counts.min() >= 2 and counts.max() <= 2 + (-(-extra // size))
    pool = gen.pool(split)
    for i in range(min(len(ex), 8)):
        np.testing.assert_array_equal(ex[i].tokens, pool[int(ids[i])].tokens)


def test_eval_and_training_streams_use_the_splits() -> None:
    cfg = SolutionTreeConfig(actions_per_problem=(3, 6), irrelevant=2)
    gen = SolutionTree(cfg)
    test = eval_examples(gen, 0, "train", "test", None, 130)
    assert len(test) == 130 and (test.meta["prompt_id"] >= 0).all()
    assert identical(test, eval_examples(gen, 0, "train", "test", None, 130))
    pool = {gen.pool("test")[i].tokens.tobytes() for i in range(cfg.test_prompts)}
    assert all(test[i].tokens.tobytes() in pool for i in range(len(test)))
    train = Stream(gen, 0, "train", 0, 64).batch(5)
    assert (train.meta["prompt_id"] == -1).all() and identical(train, Stream(gen, 0, "train", 0, 64).batch(5))


# ---- validation, rendering and an end-to-end run -------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"actions": 20, "problem_states": 19}, "problem_states", "need problem_states >= actions"),
        ({"actions_per_problem": (4, 3)}, "actions_per_problem", "need 1 <= low <= high"),
        ({"actions_per_problem": (0, 3)}, "actions_per_problem", "need 1 <= low <= high"),
        (
            {"states": 1, "actions": 1, "problem_states": 1, "contexts": 1, "irrelevant": 0},
            "test_prompts",
            "make only 6",
        ),
    ],
)
def test_infeasible_configs_are_rejected(fields: dict, where: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        SolutionTreeConfig(**fields)
    assert where in str(err.value)


def test_infeasible_data_is_a_spec_error_naming_the_field() -> None:
    with pytest.raises(SpecError, match="stages.train.data.problem_states"):
        load_spec("specs/solution_tree.yaml", ["stages.train.data.problem_states=5"])


@FAST
@given(cfg=configs(), seed=SEEDS, split=SPLITS)
def test_render_shows_prompt_and_answer(cfg, seed, split) -> None:
    gen = SolutionTree(cfg)
    ex = gen.sample(counter_rng(seed), 3, split)
    for i in range(3):
        text = gen.render(ex[i])
        prompt, answer = gen.vocab.decode(ex[i].prompt), gen.vocab.decode(ex[i].answer)
        assert text.startswith(f"{prompt} -> {answer}") and prompt.endswith(" :") and answer.endswith(" EOS")
        assert f"n={int(ex.meta['n'][i])}" in text and ("prompt " in text) == (split != "train")


@pytest.mark.slow
def test_example_spec_trains_and_evaluates_both_pools(tmp_path) -> None:

    overrides = [
        f"run.output={tmp_path}",
        "stages.train.model.dim=32",
        "stages.train.model.depth=1",
        "stages.train.model.ffn.hidden=64",
        "stages.train.schedule.steps=4",
        "stages.train.schedule.warmup=1",
        "stages.train.batch.global=8",
        "stages.train.logging.every=2",
        "stages.train.checkpoint.every=4",
        "stages.train.evals.0.examples=32",
    ]
    _, rows = train_in_process(load_spec("specs/solution_tree.yaml", overrides))
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4]
    assert all(np.isfinite(r["loss"]) and 0 < r["loss"] < 2 * np.log(29) for r in logged)
    assert logged[-1]["tokens"] == pytest.approx(logged[-1]["examples"] * 89, rel=0.25)
    done = json.loads((tmp_path / "train" / "final" / "done.json").read_text())
    assert done["step"] == 4 and {"acc/test", "acc/rl"} <= set(done["metrics"])
