"""Config of the knowledge-graph experts generator (`kind: kg_experts`) and its length model."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Problems
from .base import TokenData, mean_t_t1


class KgExperts(TokenData):
    """Knowledge-graph experts (docs/papers/transcendence.md): text from corrupted experts, cloze queries.

    A world (from `world_seed`) holds `entities` fictional one-token names in `clusters`, and `relations`
    functional typed relations, each with 2 sentence templates. Each expert sees a corrupted copy of the graph
    according to its per-cluster confidences. `train` = packed blocks of entity paragraphs written by sampled
    experts (loss on every token: pretraining text); `eval`/`test` = cloze queries `the <r> of X is` with the
    true object as the answer (loss on the answer only).
    """

    kind: Literal["kg_experts"] = Field(
        "kg_experts",
        description="Knowledge-graph experts and cloze queries (docs/papers/transcendence.md).",
    )
    mode: Literal["denoising", "selection", "generalization"] = Field(
        "denoising",
        description="denoising: confidences drawn from `confidences`; selection: confidences solve the knowledge-budget LP; generalization: two-hop queries.",
    )
    world_seed: int = Field(
        0, ge=0, description="Seed of the world: names, clusters, true graph, experts' graphs."
    )
    entities: int = Field(
        1000, ge=2, le=1_000_000, description="Fictional entities, one name token each (the paper: 10k)."
    )
    clusters: int = Field(
        10, ge=1, description="Clusters of entities; expertise is per cluster (the paper: 100)."
    )
    relations: int = Field(
        8,
        ge=1,
        le=40,
        description="Functional relations; every entity has one object per relation (the paper: 20).",
    )
    range_fraction: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Each relation's objects come from its own random range of this fraction of entities (its type).",
    )
    experts: int = Field(5, ge=1, description="Experts, each with its own corrupted copy of the graph.")
    entities_per_expert: int | None = Field(
        None,
        ge=1,
        description="Entities of the clusters each expert is confident on (greedy fill in random order); null = all (the paper's denoising).",
    )
    confidences: tuple[float, ...] = Field(
        (0.6, 0.8, 1.0),
        min_length=1,
        description="denoising/generalization: each chosen cluster's confidence c is drawn from these (one value = the authors' runs).",
    )
    knowledge_per_expert: float | None = Field(
        None,
        gt=0,
        description="selection: confidences maximise sum(c) subject to sum(|C|*c) = this; null = half of entities_per_expert.",
    )
    heldout_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="generalization: fraction of entities whose two-hop facts appear only in `test`.",
    )
    two_hop_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="generalization: fraction of training documents that state a two-hop fact (of a non-held-out entity).",
    )
    cot: bool = Field(
        False,
        description="generalization: two-hop answers first write the intermediate fact (chain of thought).",
    )
    text_len: int = Field(
        256,
        ge=2,
        le=65536,
        description="Tokens per training block (BOS, then paragraphs joined by EOS, cut; the paper: 512).",
    )

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "eval", "test")
    RELATION_NAMES: ClassVar[tuple[str, ...]] = (
        "mother", "father", "mentor", "rival", "employer", "neighbour", "doctor", "lawyer",
        "teacher", "partner", "landlord", "banker", "tailor", "barber", "coach", "agent",
        "sponsor", "guardian", "heir", "successor", "pupil", "patron", "friend", "boss",
        "editor", "publisher", "captain", "pilot", "chef", "gardener", "best friend", "old rival",
        "first teacher", "business partner", "favourite author", "piano teacher", "chess coach",
        "family doctor", "tax advisor", "personal trainer",
    )  # fmt: skip
    # Template words (relation words aside); S = subject, O = object, R = relation words, M = intermediate.
    WORDS: ClassVar[tuple[str, ...]] = ("the", "of", "is", "'s", "has", "as", "for", ",", "so")
    QUERY: ClassVar[tuple[str, ...]] = ("the", "R", "of", "S", "is", "O", ".")  # template 0 = the cloze form
    ALT_TEMPLATES: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("S", "'s", "R", "is", "O", "."),
        ("S", "has", "O", "as", "R", "."),
        ("for", "S", ",", "the", "R", "is", "O", "."),
    )  # template 1 of each relation: one of these, chosen by the world seed

    @model_validator(mode="after")
    def _feasible(self) -> KgExperts:
        p = Problems()
        n, k = self.entities, self.clusters
        if k > n:
            p.add(
                "clusters",
                f"clusters={k} exceeds entities={n}; every cluster needs an entity: lower clusters",
            )
        if self.experts > n:
            p.add("experts", f"experts={self.experts} exceeds entities={n}; lower experts or raise entities")
        bad = [c for c in self.confidences if not 0 <= c <= 1]
        if bad:
            p.add(
                "confidences",
                f"{bad} lie outside [0, 1]; a confidence is the probability that a fact survives",
            )
        largest = -(-n // max(k, 1))
        per = self.entities_per_expert
        if per is not None and per > n:
            p.add(
                "entities_per_expert", f"{per} exceeds entities={n}; lower it or leave it null (all entities)"
            )
        elif per is not None and per < largest and k <= n:
            p.add(
                "entities_per_expert",
                f"{per} is smaller than a cluster ({largest} entities), so an expert could get none; raise it to >= {largest}",
            )
        if self.mode == "selection" and not p.items:
            budget, least = self.knowledge_budget, self.selected_at_least
            if budget > least:
                p.add(
                    "knowledge_per_expert",
                    f"{budget:g} cannot be met: an expert's clusters may hold only {least} entities (sum |C|*c <= {least}); "
                    f"lower it to <= {least} or raise entities_per_expert",
                )
        if self.mode == "generalization":
            held = self.heldout_entities
            if held < 1 or held > n - 1:
                p.add(
                    "heldout_fraction",
                    f"{self.heldout_fraction} of {n} entities holds out {held}; need 1 <= held out <= {n - 1}",
                )
        elif self.cot:
            p.add(
                "cot",
                f"cot writes the intermediate fact of two-hop queries; mode {self.mode!r} has none (use generalization)",
            )
        p.check()
        return self

    @property
    def two_hop(self) -> bool:
        """Whether the queries are two-hop (generalization mode)."""
        return self.mode == "generalization"

    @property
    def heldout_entities(self) -> int:
        """Entities whose two-hop facts are held out of training (generalization)."""
        return round(self.heldout_fraction * self.entities)

    @property
    def cluster_sizes(self) -> tuple[int, int]:
        """(smallest, largest) cluster: clusters are balanced."""
        return self.entities // self.clusters, -(-self.entities // self.clusters)

    @property
    def expert_entities(self) -> int:
        """entities_per_expert, null resolved to all entities."""
        return self.entities if self.entities_per_expert is None else self.entities_per_expert

    @property
    def selected_at_least(self) -> int:
        """A guaranteed lower bound on the entities of an expert's clusters (greedy fill in random order).

        The fill skips a cluster only when it does not fit, so it ends within one cluster of the target: either
        every cluster is taken (all entities) or the total exceeds entities_per_expert minus the largest cluster.
        """
        per = self.expert_entities
        return self.entities if per >= self.entities else per - self.cluster_sizes[1] + 1

    @property
    def knowledge_budget(self) -> float:
        """knowledge_per_expert, null resolved to half of the expert's entities."""
        return self.expert_entities / 2 if self.knowledge_per_expert is None else self.knowledge_per_expert

    def relation_words(self) -> tuple[tuple[str, ...], ...]:
        """The words of each relation's name."""
        return tuple(tuple(name.split()) for name in self.RELATION_NAMES[: self.relations])

    def words(self) -> tuple[str, ...]:
        """The template words of the vocabulary, in id order after PAD, BOS, EOS (then '.', then names)."""
        seen = list(self.WORDS)
        for rel in self.relation_words():
            seen += [w for w in rel if w not in seen]
        return tuple(seen)

    @property
    def vocab_size(self) -> int:
        """PAD, BOS, EOS, template words, '.', one token per entity."""
        return 3 + len(self.words()) + 1 + self.entities

    def query_len(self, r1: int, r2: int | None = None) -> int:
        """Tokens of one query example: BOS, prompt, answer, EOS (r2 given: two-hop `the r2 of the r1 of X is`)."""
        w = self.relation_words()
        if r2 is None:
            return len(w[r1]) + 8  # BOS the R of X is Y . EOS
        if self.cot:  # ... is the R1 of X is M , so the R2 of M is Y . EOS
            return 2 * (len(w[r1]) + len(w[r2])) + 21
        return len(w[r1]) + len(w[r2]) + 10  # BOS the R2 of the R1 of X is Y . EOS

    def _query_lens(self) -> list[int]:
        r = range(self.relations)
        return (
            [self.query_len(a, b) for a in r for b in r] if self.two_hop else [self.query_len(a) for a in r]
        )

    def max_seq_len(self) -> int:
        """Training blocks are exactly text_len tokens; queries are at most the longest query."""
        return max(self.text_len, max(self._query_lens()))

    def length_stats(self, split: str = "train") -> tuple[float, float]:
        """Exact: blocks are text_len tokens; queries draw their relations uniformly."""
        ts = [self.text_len] if split == "train" else self._query_lens()
        return mean_t_t1(ts)
