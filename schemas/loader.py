"""Load a spec: safe YAML with source positions, `extends` deep-merge, dotted overrides, precise errors."""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

import yaml
from pydantic import BaseModel, Discriminator, ValidationError

from .base import Strict
from .spec import Spec

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Where:
    """A place in a source: a file (or an override) and a 1-based line and column."""

    source: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.col}" if self.line else self.source


@dataclass(frozen=True)
class Issue:
    """One problem in a spec: where it is, the dotted path of the key, and what was expected."""

    where: Where
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path}: {self.message}" if self.path else f"{self.where}: {self.message}"


class SpecError(Exception):
    """A user mistake in a spec or an override; `issues` holds every problem found, in source order."""

    def __init__(self, issues: list[Issue]):
        self.issues = sorted(issues, key=lambda i: (i.where.source, i.where.line, i.where.col))
        super().__init__("\n".join(str(i) for i in self.issues))


@dataclass
class Tree:
    """Plain YAML data plus the source position of every value and every mapping key, by path."""

    data: Any
    value_at: dict[Path, Where]
    key_at: dict[Path, Where]


def dotted(path: Path) -> str:
    """`('stages', 'train', 'evals', 0)` -> `stages.train.evals.0`."""
    return ".".join(str(p) for p in path)


# ----------------------------------------------------------------------------- YAML with positions

_MAP, _SEQ, _MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"
_MAX_NODES = 50_000  # far above any real spec; stops alias "billion laughs" expansion


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats: `1e-3` is a number, not the string '1e-3'."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _where(source: str, node: yaml.Node) -> Where:
    return Where(source, node.start_mark.line + 1, node.start_mark.column + 1)


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


def _to_tree(node: yaml.Node, source: str) -> Tree:
    """Turn a composed YAML node graph into plain data with positions.

    Only plain mappings, sequences and the scalars of YAML's safe schema are accepted: any other tag
    (`!!python/object/apply:...`, `!!set`, `!custom`) is an error and is never constructed. Merge keys
    (`<<: *anchor`) are resolved with YAML's rules: explicit keys win over merged ones, earlier merge
    sources over later ones. Every problem is collected before raising.
    """
    ctor = yaml.constructor.SafeConstructor()
    value_at: dict[Path, Where] = {}
    key_at: dict[Path, Where] = {}
    issues: list[Issue] = []
    active: set[int] = set()  # nodes on the current build stack, to catch recursive aliases
    count = 0

    def unsupported(n: yaml.Node, path: Path) -> None:
        issues.append(
            Issue(
                _where(source, n),
                dotted(path),
                f"unsupported YAML tag {_short_tag(n.tag)!r}; a spec holds plain data only",
            )
        )

    def scalar(n: yaml.Node, path: Path) -> Any:
        if not isinstance(n, yaml.ScalarNode):
            unsupported(n, path)
            return None
        try:
            return ctor.construct_object(n, deep=True)
        except yaml.constructor.ConstructorError:
            unsupported(n, path)
            return None

    def entries(n: yaml.MappingNode, path: Path) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """(key node, value node, inherited) of a mapping, merge keys expanded (inherited first)."""
        inherited: list[tuple[yaml.Node, yaml.Node, bool]] = []
        own: list[tuple[yaml.Node, yaml.Node, bool]] = []
        for kn, vn in n.value:
            if kn.tag != _MERGE:
                own.append((kn, vn, False))
                continue
            sources = vn.value if isinstance(vn, yaml.SequenceNode) else [vn]
            for src in sources:
                if not isinstance(src, yaml.MappingNode) or src.tag != _MAP or id(src) in active:
                    issues.append(
                        Issue(
                            _where(source, src), dotted(path), "`<<` merges a mapping or a list of mappings"
                        )
                    )
                    continue
                active.add(id(src))
                merged = entries(src, path)  # the source's own keys win over what it merges itself
                mine = {k.value for k, _, deeper in merged if not deeper and isinstance(k, yaml.ScalarNode)}
                inherited.extend(
                    (k, v, True)
                    for k, v, deeper in merged
                    if not (deeper and isinstance(k, yaml.ScalarNode) and k.value in mine)
                )
                active.discard(id(src))
        return inherited + own

    def build(n: yaml.Node, path: Path) -> Any:
        nonlocal count
        count += 1
        if count > _MAX_NODES:
            issues.append(
                Issue(_where(source, n), dotted(path), f"more than {_MAX_NODES} values (runaway aliases?)")
            )
            raise SpecError(issues)
        value_at[path] = _where(source, n)
        if isinstance(n, yaml.ScalarNode):
            return scalar(n, path)
        if id(n) in active:
            issues.append(Issue(_where(source, n), dotted(path), "recursive alias: a value contains itself"))
            return None
        if isinstance(n, yaml.MappingNode) and n.tag == _MAP:
            active.add(id(n))
            out: dict[str, Any] = {}
            own_keys: set[str] = set()
            for kn, vn, inherited in entries(n, path):
                key = scalar(kn, path) if isinstance(kn, yaml.ScalarNode) else kn
                if kn.tag == "tag:yaml.org,2002:null" or not isinstance(key, str | int | float | bool):
                    if key is not None or kn.tag == "tag:yaml.org,2002:null":  # else: reported by scalar()
                        issues.append(
                            Issue(_where(source, kn), dotted(path), "keys must be plain strings or numbers")
                        )
                    continue
                key = key if isinstance(key, str) else str(key)
                kpath = (*path, key)
                if inherited and key in out:
                    continue  # an earlier merge source already supplied it
                if not inherited:
                    if key in own_keys:
                        issues.append(Issue(_where(source, kn), dotted(kpath), "duplicate key"))
                    own_keys.add(key)
                if key in out:  # an explicit key over a merged one, or a duplicate: forget the old positions
                    _drop_table_positions(value_at, key_at, kpath)
                key_at[kpath] = _where(source, kn)
                out[key] = build(vn, kpath)
            active.discard(id(n))
            return out
        if isinstance(n, yaml.SequenceNode) and n.tag == _SEQ:
            active.add(id(n))
            items = [build(v, (*path, i)) for i, v in enumerate(n.value)]
            active.discard(id(n))
            return items
        unsupported(n, path)
        return None

    data = build(node, ())
    if issues:
        raise SpecError(issues)
    return Tree(data, value_at, key_at)


def _drop_table_positions(value_at: dict[Path, Where], key_at: dict[Path, Where], prefix: Path) -> None:
    """Forget the positions at and below `prefix` (a value replaced by another)."""
    n = len(prefix)
    for table in (value_at, key_at):
        for p in [p for p in table if p[:n] == prefix]:
            del table[p]


def _parse(text: str, source: str) -> Tree:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = Where(source, mark.line + 1, mark.column + 1) if mark else Where(source)
        message = f"YAML syntax error: {e.problem or e}"
        if e.context and e.context_mark and e.context_mark is not mark:
            cm = e.context_mark
            message += f" ({e.context} at line {cm.line + 1}, column {cm.column + 1})"
        raise SpecError([Issue(where, "", message)]) from None
    except yaml.YAMLError as e:
        raise SpecError([Issue(Where(source), "", f"YAML error: {e}")]) from None
    if node is None:
        return Tree({}, {(): Where(source, 1, 1)}, {})
    return _to_tree(node, source)


# ----------------------------------------------------------------------------- extends


def _merge(base: Tree, top: Tree) -> Tree:
    """Deep-merge `top` over `base`: mappings merge, lists and scalars replace.

    A mapping whose `kind` differs from the base's replaces it whole (switching `ffn: {kind: moe}` to
    `{kind: dense}` must not inherit `experts`): the fields of one kind mean nothing to another.
    """

    def merge(b: Any, t: Any) -> Any:
        if isinstance(b, dict) and isinstance(t, dict):
            if "kind" in b and "kind" in t and b["kind"] != t["kind"]:
                return t
            out = dict(b)
            for k, v in t.items():
                out[k] = merge(b[k], v) if k in b else v
            return out
        return t

    data = merge(base.data, top.data)
    value_at: dict[Path, Where] = {}
    key_at: dict[Path, Where] = {}

    def walk(x: Any, path: Path) -> None:
        value_at[path] = top.value_at.get(path) or base.value_at.get(path, Where("?"))
        if path in top.key_at or path in base.key_at:
            key_at[path] = top.key_at.get(path) or base.key_at[path]
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, (*path, k))
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, (*path, i))

    walk(data, ())
    return Tree(data, value_at, key_at)


def _load_file(path: str, chain: tuple[str, ...] = (), at: Where | None = None) -> Tree:
    """Read one spec file and everything it `extends`, merged (cycles are errors).

    Parents are resolved relative to the file naming them and merged in order (a later parent wins over
    an earlier one, the file itself over all of them). `at` is the `extends` entry that named `path`.
    """
    real = os.path.realpath(path)
    if real in chain:
        cycle = " -> ".join([*(os.path.relpath(c) for c in chain), os.path.relpath(real)])
        raise SpecError([Issue(at or Where(path), "extends", f"extends cycle: {cycle}")])
    problem = ""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        problem = e.strerror or str(e)
    except UnicodeDecodeError as e:
        problem = f"not UTF-8 text ({e.reason})"
    if problem:
        raise SpecError([Issue(at or Where(path), "extends" if at else "", f"cannot read {path}: {problem}")])
    tree = _parse(text, path)
    if not isinstance(tree.data, dict):
        raise SpecError(
            [Issue(tree.value_at[()], "", "a spec must be a mapping with run, resources and stages")]
        )
    if "extends" not in tree.data:
        return tree
    parents = tree.data.pop("extends")
    if parents is None:
        return tree
    names = parents if isinstance(parents, list) else [parents]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise SpecError(
            [Issue(tree.value_at[("extends",)], "extends", "must be a file name or a list of file names")]
        )
    merged: Tree | None = None
    issues: list[Issue] = []
    for i, name in enumerate(names):
        where = tree.value_at[("extends", i)] if isinstance(parents, list) else tree.value_at[("extends",)]
        try:
            parent = _load_file(
                os.path.normpath(os.path.join(os.path.dirname(path), name)), (*chain, real), where
            )
        except SpecError as e:
            issues.extend(e.issues)
            continue
        merged = parent if merged is None else _merge(merged, parent)
    if issues:
        raise SpecError(issues)
    return tree if merged is None else _merge(merged, tree)


# ----------------------------------------------------------------------------- schema walking


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types behind Annotated / Optional / Union annotations."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [t for a in typing.get_args(tp) for t in _unwrap(a)]
    return [tp]


def _field_map(model: type[BaseModel]) -> dict[str, Any]:
    """Keys a model accepts in YAML (aliases where set) -> their annotations (with their metadata)."""
    return {(f.alias or name): f.rebuild_annotation() for name, f in model.model_fields.items()}


def _default_kind(tp: Any) -> str | None:
    """The kind a mapping without `kind` is read as, for a union built by `schemas.base.kinded`."""
    if typing.get_origin(tp) is typing.Annotated:
        for meta in tp.__metadata__:
            if isinstance(meta, Discriminator):
                return getattr(meta.discriminator, "default_kind", None)
        return _default_kind(typing.get_args(tp)[0])
    return None


def _kind_of(tp: Any, value: Any) -> Any:
    """The `kind` a mapping validated against `tp` is read as (its own, else the union's default)."""
    return value.get("kind", _default_kind(tp)) if isinstance(value, dict) else None


def _all_kinds() -> frozenset[str]:
    """Every `kind` tag of the spec language (pydantic puts the chosen tag in error locations)."""
    out, todo = set(), [Strict]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "kind" in cls.model_fields and isinstance(cls.model_fields["kind"].default, str):
            out.add(cls.model_fields["kind"].default)
    return frozenset(out)


def _kinds(options: list[Any]) -> dict[str, type[BaseModel]]:
    """`kind` tag -> model class, for the BaseModel members of a union."""
    out = {}
    for t in options:
        if isinstance(t, type) and issubclass(t, BaseModel) and "kind" in t.model_fields:
            out[t.model_fields["kind"].default] = t
    return out


def _child(tp: Any, key: str | int, value: Any) -> Any | None:
    """The annotation of `key` inside a value of annotation `tp` (None if `key` cannot exist there)."""
    for t in _unwrap(tp):
        origin = typing.get_origin(t)
        if origin is dict and isinstance(key, str):
            return typing.get_args(t)[1]
        if origin in (list, tuple) and isinstance(key, int):
            return typing.get_args(t)[0]
    models = [t for t in _unwrap(tp) if isinstance(t, type) and issubclass(t, BaseModel)]
    kinds = _kinds(models)
    if kinds and _kind_of(tp, value) in kinds:
        models = [kinds[_kind_of(tp, value)]]
    for m in models:
        fields = _field_map(m)
        if key in fields:
            return fields[key]
    return None


def _type_at(path: Path, data: Any) -> Any | None:
    """The annotation that the value at `path` is validated against (None: not in the schema)."""
    tp: Any = Spec
    node = data
    for key in path:
        if tp is None:
            return None
        tp = _child(tp, key, node)
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            node = None
    return tp


def _models_at(path: Path, data: Any) -> list[type[BaseModel]]:
    """The spec model class(es) that the mapping at `path` is validated against."""
    tp = _type_at(path, data)
    if tp is None:
        return []
    node = _get(data, path)
    models = [t for t in _unwrap(tp) if isinstance(t, type) and issubclass(t, BaseModel)]
    kinds = _kinds(models)
    if kinds and _kind_of(tp, node) in kinds:
        return [kinds[_kind_of(tp, node)]]
    return models


def _get(data: Any, path: Path) -> Any:
    """The value at `path` in plain data (None where the path does not exist)."""
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# ----------------------------------------------------------------------------- overrides


def _parse_value(raw: str, source: str) -> Any:
    """An override's value: YAML with the same rules as a spec file; an empty value is ''."""
    if not raw.strip():
        return ""
    try:
        node = yaml.compose(raw, Loader=_Loader)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError([Issue(Where(source), "", f"value is not valid YAML: {problem}")]) from None
    return "" if node is None else _to_tree(node, source).data


def _is_mapping_field(tp: Any) -> bool:
    """Whether a value of annotation `tp` may be a mapping (a model or a dict)."""
    return any(
        typing.get_origin(t) is dict or (isinstance(t, type) and issubclass(t, BaseModel))
        for t in _unwrap(tp)
    )


def _apply_overrides(tree: Tree, overrides: list[str] | tuple[str, ...]) -> None:
    """Set `key.path=value` overrides (value parsed as YAML) on existing keys or schema fields.

    A key absent from the file may be set when the schema has it (intermediate mappings are created);
    any other key is an error with a did-you-mean. Every bad override is reported, not just the first.
    """
    issues: list[Issue] = []
    for text in overrides:
        where = Where(f"override {text!r}")
        key, eq, raw = text.partition("=")
        key = key.strip()
        if not eq or not key:
            issues.append(
                Issue(
                    where,
                    "",
                    "an override must look like key.path=value (e.g. stages.train.schedule.steps=100)",
                )
            )
            continue
        if key == "extends" or key.startswith("extends."):
            issues.append(Issue(where, "extends", "cannot be overridden; extend in a spec file instead"))
            continue
        try:
            value = _parse_value(raw, where.source)
        except SpecError as e:
            issues.extend(Issue(where, key, i.message) for i in e.issues)
            continue
        issues.extend(set_value(tree, key, value, where))
    if issues:
        raise SpecError(issues)


def set_value(tree: Tree, key: str, value: Any, where: Where) -> list[Issue]:
    """Set the dotted `key` of `tree` to `value` (recorded as coming from `where`); the problems, if any.

    A key absent from the tree may be set when the schema has it (intermediate mappings are created); any
    other key is a problem with a did-you-mean. The value is not validated here.
    """
    parts = key.split(".")
    node: Any = tree.data
    path: Path = ()
    for j, name in enumerate(parts):
        last = j == len(parts) - 1
        part: str | int = name
        if isinstance(node, list):
            if not (name.isdigit() and int(name) < len(node)):
                valid = f"an index 0..{len(node) - 1}" if node else "no index: the list is empty"
                return [
                    Issue(where, dotted((*path, name)), f"{name!r} is not an item of this list ({valid})")
                ]
            part = int(name)
        elif isinstance(node, dict):
            if name not in node:
                models = _models_at(path, tree.data)  # new keys: schema fields only, not new stage names
                accepted = sorted({k for m in models for k in _field_map(m)} | set(node))
                if not any(name in _field_map(m) for m in models):
                    hint = _suggest(name, accepted) or (
                        f"; keys here: {', '.join(accepted)}" if accepted else ""
                    )
                    return [Issue(where, dotted((*path, name)), f"no such key{hint}")]
                if not last:
                    node[name] = {}
            elif (
                not last
                and node[name] is None
                and _is_mapping_field(_child(_type_at(path, tree.data), name, node))
            ):
                node[name] = {}  # `init: null` in the file, `init.stage=x` on the command line
        else:
            return [Issue(where, dotted((*path, name)), f"{dotted(path)} is {_show(node)}, not a mapping")]
        path = (*path, part)
        if last:
            node[part] = value
            _drop_positions(tree, path)
            tree.value_at[path] = where
            tree.key_at[path] = where
        else:
            node = node[part]
    return []


def _drop_positions(tree: Tree, prefix: Path) -> None:
    _drop_table_positions(tree.value_at, tree.key_at, prefix)


# ----------------------------------------------------------------------------- validation errors


def _resolve_loc(loc: tuple[Any, ...], data: Any) -> Path:
    """Map pydantic's error location to a path in the YAML data (dropping union tags)."""
    path: list[str | int] = []
    node = data
    tp: Any = Spec  # the schema annotation at `node`: it says where pydantic puts a union's tag
    for item in loc:
        kinds = _kinds(_unwrap(tp)) if tp is not None else {}
        if len(kinds) > 1 and isinstance(node, dict) and item == _kind_of(tp, node):
            tp = kinds[item]  # the tag of a discriminated union, even when a key has the same name
            continue
        if isinstance(node, dict) and item in node:
            path.append(item)
            tp = _child(tp, item, node) if tp is not None else None
            node = node[item]
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            path.append(item)
            tp = _child(tp, item, node) if tp is not None else None
            node = node[item]
        elif (
            isinstance(node, dict)
            and isinstance(item, str)
            and (
                item == node.get("kind", item if item in _ALL_KINDS else None)
                or "[" in item
                or item in _TYPE_TAGS
            )
        ):
            continue  # a discriminated-union tag or a union-member label, not a key
        elif isinstance(node, list | tuple) or (
            not isinstance(node, dict) and (item in _TYPE_TAGS or "[" in str(item))
        ):
            continue
        else:
            path.append(item)  # a missing key: keep it so the message names it
            node = None
    return tuple(path)


_ALL_KINDS = _all_kinds()
_TYPE_TAGS = frozenset("int float str bool none list dict tuple function-after function-before".split())


def _position(tree: Tree, path: Path, key: bool) -> Where:
    """Source position for a path: the key (or value) itself, else its nearest existing ancestor."""
    p = path
    while p:
        table = tree.key_at if key else tree.value_at
        if p in table:
            return table[p]
        if p in tree.value_at:
            return tree.value_at[p]
        p = p[:-1]
        key = True
    return tree.value_at.get((), Where("?"))


def _show(value: Any) -> str:
    text = (
        repr(value)
        if not isinstance(value, dict | list)
        else yaml.safe_dump(value, default_flow_style=True).strip()
    )
    return text if len(text) < 60 else text[:57] + "..."


def _issue(err: dict[str, Any], tree: Tree) -> Issue:
    path = _resolve_loc(tuple(err["loc"]), tree.data)
    typ, msg, ctx = err["type"], err["msg"], err.get("ctx") or {}
    if typ == "spec":
        path = _extend(path, str(ctx.get("field", "")), tree.data)
        return Issue(_position(tree, path, key=_compound(tree.data, path)), dotted(path), msg)
    if typ == "extra_forbidden":
        models = _models_at(path[:-1], tree.data)
        fields = sorted({k for m in models for k in _field_map(m)})
        hint = _suggest(str(path[-1]), fields) or (f"; allowed keys: {', '.join(fields)}" if fields else "")
        tp = _type_at(path[:-1], tree.data)
        kinds = _kinds(_unwrap(tp))
        kind = _kind_of(tp, _get(tree.data, path[:-1]))
        of = f" for kind {kind!r}" if len(kinds) > 1 and kind in kinds else ""  # a union: say which member
        owners = [k for k, m in kinds.items() if k != kind and path[-1] in _field_map(m)]
        if of and owners:  # the key belongs to another kind: the user probably meant that kind
            hint = f"; {path[-1]!r} is a key of kind {owners[0]!r}: set kind: {owners[0]}"
        return Issue(_position(tree, path, key=True), dotted(path), f"unknown key{of}{hint}")
    if typ == "missing":
        return Issue(_position(tree, path[:-1], key=True), dotted(path), "missing required key")
    if typ in ("union_tag_invalid", "union_tag_not_found") and not isinstance(err.get("input"), dict):
        got = err.get("input")
        return Issue(
            _position(tree, path, key=False),
            dotted(path),
            f"input should be a valid dictionary (got {_show(got)})",
        )
    if typ in ("union_tag_invalid", "union_tag_not_found"):
        expected = list(_kinds(_unwrap(_type_at(path, tree.data)))) or [
            t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()
        ]
        kpath = (*path, "kind")
        tag = _get(tree.data, kpath)
        if typ == "union_tag_not_found" or tag is None:
            at = (
                _position(tree, kpath, key=False)
                if kpath in tree.value_at
                else _position(tree, path, key=True)
            )
            return Issue(at, dotted(path), f"needs a `kind`: one of {', '.join(expected)}")
        return Issue(
            _position(tree, kpath, key=False),
            dotted(kpath),
            f"unknown kind {str(tag)!r}; expected one of {', '.join(expected)}{_suggest(str(tag), expected)}",
        )
    if typ == "literal_error":
        expected = [
            t.strip().strip("'")
            for t in str(ctx.get("expected", "")).replace(" or ", ",").split(",")
            if t.strip()
        ]
        got = err.get("input")
        return Issue(
            _position(tree, path, key=False),
            dotted(path),
            f"{_show(got)} is not one of {', '.join(expected)}{_suggest(str(got), expected)}",
        )
    got = err.get("input")
    detail = f" (got {_show(got)})" if not isinstance(got, dict) and typ not in ("value_error",) else ""
    return Issue(
        _position(tree, path, key=_compound(tree.data, path)), dotted(path), msg[0].lower() + msg[1:] + detail
    )


def _compound(data: Any, path: Path) -> bool:
    """Whether the value at `path` is a mapping or a list: its key is the place to point at, not its body."""
    return isinstance(_get(data, path), dict | list)


def _extend(path: Path, field: str, data: Any) -> Path:
    """`path` + the dotted `field` of a cross-field error, matching keys that contain dots (stage names)."""
    parts = [p for p in field.split(".") if p]
    out = list(path)
    node = _get(data, path)
    i = 0
    while i < len(parts):
        step: str | int = parts[i]
        n = 1
        if isinstance(node, dict):
            for j in range(len(parts), i, -1):
                if ".".join(parts[i:j]) in node:
                    step, n = ".".join(parts[i:j]), j - i
                    break
        elif isinstance(node, list) and parts[i].isdigit():
            step = int(parts[i])
        out.append(step)
        node = _get(node, (step,))
        i += n
    return tuple(out)


def _issues(e: ValidationError, tree: Tree) -> list[Issue]:
    """Convert pydantic errors to issues; merge the per-member errors of non-discriminated unions."""
    errors = []
    for err in e.errors(include_url=False):
        # A rule that found several problems at once raises one "spec" error whose ctx["problems"] holds
        # (field, message) pairs: one issue each, so that every problem is reported, not just the first.
        problems = (err.get("ctx") or {}).get("problems") if err["type"] == "spec" else None
        if problems:
            errors.extend({**err, "msg": m, "ctx": {"field": f}} for f, m in problems)
        else:
            errors.append(err)
    issues = [_issue(err, tree) for err in errors]
    # A union like `int | [low, high]` reports one error per member; when a member got far enough to
    # complain about an inner item, the outer "wrong type" complaint of the other member is noise.
    paths = {i.path for i in issues}
    by_path: dict[str, list[Issue]] = {}
    for err, issue in zip(errors, issues, strict=True):
        shadowed = isinstance(err.get("input"), list | dict) and any(
            p.startswith(issue.path + ".") for p in paths
        )
        if not shadowed or err["type"] in ("spec", "extra_forbidden", "missing"):
            by_path.setdefault(issue.path, []).append(issue)
    out = []
    for issues in by_path.values():
        if len(issues) == 1:
            out.append(issues[0])
        else:
            msgs = list(dict.fromkeys(i.message for i in issues))
            out.append(
                Issue(issues[0].where, issues[0].path, " or ".join(msgs) if len(msgs) <= 3 else msgs[0])
            )
    return out


# ----------------------------------------------------------------------------- public API


def load_tree(path: str, overrides: list[str] | tuple[str, ...] = ()) -> Tree:
    """Read a spec file with its `extends` chain and the overrides applied, before validation."""
    tree = _load_file(path)
    _apply_overrides(tree, overrides)
    return tree


def load_spec(path: str, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Load, merge, override and validate a spec; raise SpecError listing every problem with its position."""
    return validate_tree(load_tree(path, overrides))


def validate_tree(tree: Tree) -> Spec:
    """The spec of a loaded tree; SpecError listing every problem with its position."""
    try:
        return Spec.model_validate(tree.data)
    except ValidationError as e:
        raise SpecError(_issues(e, tree)) from None


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML, every default filled in (what the run directory records)."""
    data = spec.model_dump(mode="json", by_alias=True, exclude={"extends"})
    return yaml.safe_dump(data, sort_keys=False)
