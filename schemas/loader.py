"""Load a spec: safe YAML with source positions, `extends` deep-merge, dotted overrides, precise errors."""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError

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


def _where(source: str, node: yaml.Node) -> Where:
    return Where(source, node.start_mark.line + 1, node.start_mark.column + 1)


def _to_tree(node: yaml.Node, source: str) -> Tree:
    """Turn a composed YAML node graph into data with positions (safe scalars only)."""
    ctor = yaml.constructor.SafeConstructor()
    value_at: dict[Path, Where] = {}
    key_at: dict[Path, Where] = {}
    issues: list[Issue] = []

    def build(n: yaml.Node, path: Path) -> Any:
        value_at[path] = _where(source, n)
        if isinstance(n, yaml.MappingNode):
            ctor.flatten_mapping(n)  # resolves `<<: *anchor` merge keys
            out: dict[str, Any] = {}
            for kn, vn in n.value:
                key = ctor.construct_object(kn, deep=True)
                if not isinstance(key, str | int | float | bool) or key is None:
                    issues.append(Issue(_where(source, kn), dotted(path), f"keys must be plain scalars, got {key!r}"))
                    continue
                key = str(key) if not isinstance(key, str) else key
                if key in out:
                    issues.append(Issue(_where(source, kn), dotted((*path, key)), "duplicate key"))
                key_at[(*path, key)] = _where(source, kn)
                out[key] = build(vn, (*path, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(v, (*path, i)) for i, v in enumerate(n.value)]
        return ctor.construct_object(n, deep=True)

    data = build(node, ())
    if issues:
        raise SpecError(issues)
    return Tree(data, value_at, key_at)


def _parse(text: str, source: str) -> Tree:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = Where(source, mark.line + 1, mark.column + 1) if mark else Where(source)
        raise SpecError([Issue(where, "", f"YAML syntax error: {e.problem or e}")]) from None
    except yaml.YAMLError as e:
        raise SpecError([Issue(Where(source), "", f"YAML error: {e}")]) from None
    if node is None:
        return Tree({}, {(): Where(source, 1, 1)}, {})
    try:
        return _to_tree(node, source)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = Where(source, mark.line + 1, mark.column + 1) if mark else Where(source)
        raise SpecError([Issue(where, "", f"unsupported YAML: {e.problem}")]) from None


# ----------------------------------------------------------------------------- extends


def _merge(base: Tree, top: Tree) -> Tree:
    """Deep-merge `top` over `base`: mappings merge, lists and scalars replace."""

    def merge(b: Any, t: Any) -> Any:
        if isinstance(b, dict) and isinstance(t, dict):
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
    """Read one spec file and everything it `extends`, merged (cycles are errors)."""
    real = os.path.realpath(path)
    if real in chain:
        cycle = " -> ".join([*(os.path.relpath(c) for c in chain), os.path.relpath(real)])
        raise SpecError([Issue(at or Where(path), "extends", f"extends cycle: {cycle}")])
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SpecError([Issue(at or Where(path), "extends" if at else "", f"cannot read {path}: {e.strerror}")]) from None
    tree = _parse(text, path)
    if not isinstance(tree.data, dict):
        raise SpecError([Issue(tree.value_at[()], "", "a spec must be a mapping with run, resources and stages")])
    parents = tree.data.get("extends")
    if parents is None:
        return tree
    names = parents if isinstance(parents, list) else [parents]
    if not all(isinstance(n, str) for n in names):
        raise SpecError([Issue(tree.value_at[("extends",)], "extends", "must be a file name or a list of file names")])
    merged: Tree | None = None
    for i, name in enumerate(names):
        where = tree.value_at[("extends", i)] if isinstance(parents, list) else tree.value_at[("extends",)]
        parent = _load_file(os.path.join(os.path.dirname(path), name), (*chain, real), where)
        merged = parent if merged is None else _merge(merged, parent)
    tree.data = {k: v for k, v in tree.data.items() if k != "extends"}
    assert merged is not None
    merged.data.pop("extends", None)
    return _merge(merged, tree)


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
    """Keys a model accepts in YAML (aliases where set) -> their annotations."""
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


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
    if kinds and isinstance(value, dict) and value.get("kind") in kinds:
        models = [kinds[value["kind"]]]
    for m in models:
        fields = _field_map(m)
        if key in fields:
            return fields[key]
    return None


def _models_at(path: Path, data: Any) -> list[type[BaseModel]]:
    """The spec model class(es) that the mapping at `path` is validated against."""
    tp: Any = Spec
    node = data
    for key in path:
        if tp is None:
            return []
        tp = _child(tp, key, node)
        node = node.get(key) if isinstance(node, dict) else node[key] if isinstance(node, list) and isinstance(key, int) and key < len(node) else None
    if tp is None:
        return []
    models = [t for t in _unwrap(tp) if isinstance(t, type) and issubclass(t, BaseModel)]
    kinds = _kinds(models)
    if kinds and isinstance(node, dict) and node.get("kind") in kinds:
        return [kinds[node["kind"]]]
    return models


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# ----------------------------------------------------------------------------- overrides


def _apply_overrides(tree: Tree, overrides: list[str] | tuple[str, ...]) -> None:
    """Set `key.path=value` overrides (value parsed as YAML) on existing keys or schema fields."""
    issues = []
    for i, text in enumerate(overrides):
        where = Where(f"override {text!r}")
        key, eq, raw = text.partition("=")
        if not eq or not key.strip():
            issues.append(Issue(where, "", "an override must look like key.path=value (e.g. stages.train.schedule.steps=100)"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            issues.append(Issue(where, key, f"value is not valid YAML: {e}"))
            continue
        parts: list[str | int] = [p for p in key.strip().split(".")]
        node: Any = tree.data
        path: Path = ()
        for j, part in enumerate(parts):
            last = j == len(parts) - 1
            if isinstance(node, list):
                if not (isinstance(part, str) and part.isdigit() and int(part) < len(node)):
                    issues.append(Issue(where, dotted((*path, part)), f"needs a list index 0..{len(node) - 1}"))
                    break
                part = int(part)
            elif isinstance(node, dict):
                if part not in node:
                    models = _models_at(path, tree.data)
                    accepted = sorted({k for m in models for k in _field_map(m)} | set(node))
                    if not any(part in _field_map(m) for m in models):
                        hint = _suggest(str(part), accepted) or (f"; keys here: {', '.join(accepted)}" if accepted else "")
                        issues.append(Issue(where, dotted((*path, part)), f"no such key{hint}"))
                        break
                    if not last:
                        node[part] = {}
            else:
                issues.append(Issue(where, dotted((*path, part)), f"{dotted(path)} is a scalar, not a mapping"))
                break
            path = (*path, part)
            if last:
                node[part] = value
                _drop_positions(tree, path)
                tree.value_at[path] = where
                tree.key_at[path] = where
            else:
                node = node[part]
    if issues:
        raise SpecError(issues)


def _drop_positions(tree: Tree, prefix: Path) -> None:
    n = len(prefix)
    for table in (tree.value_at, tree.key_at):
        for p in [p for p in table if p[:n] == prefix]:
            del table[p]


# ----------------------------------------------------------------------------- validation errors


def _resolve_loc(loc: tuple[Any, ...], data: Any) -> Path:
    """Map pydantic's error location to a path in the YAML data (dropping union tags)."""
    path: list[str | int] = []
    node = data
    for item in loc:
        if isinstance(node, dict) and item in node:
            path.append(item)
            node = node[item]
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            path.append(item)
            node = node[item]
        elif isinstance(node, dict) and isinstance(item, str) and (item == node.get("kind") or "[" in item or item in _TYPE_TAGS):
            continue  # a discriminated-union tag or a union-member label, not a key
        elif isinstance(node, list | tuple) or (not isinstance(node, dict) and (item in _TYPE_TAGS or "[" in str(item))):
            continue
        else:
            path.append(item)  # a missing key: keep it so the message names it
            node = None
    return tuple(path)


_TYPE_TAGS = {"int", "float", "str", "bool", "none", "list", "dict", "tuple", "function-after", "function-before"}


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
    text = repr(value) if not isinstance(value, dict | list) else yaml.safe_dump(value, default_flow_style=True).strip()
    return text if len(text) < 60 else text[:57] + "..."


def _issue(err: dict[str, Any], tree: Tree) -> Issue:
    path = _resolve_loc(tuple(err["loc"]), tree.data)
    typ, msg, ctx = err["type"], err["msg"], err.get("ctx") or {}
    if typ == "spec":
        extra = tuple(int(p) if p.isdigit() else p for p in str(ctx.get("field", "")).split(".") if p)
        path = path + extra
        return Issue(_position(tree, path, key=False), dotted(path), msg)
    if typ == "extra_forbidden":
        models = _models_at(path[:-1], tree.data)
        fields = sorted({k for m in models for k in _field_map(m)})
        hint = _suggest(str(path[-1]), fields) or (f"; allowed keys: {', '.join(fields)}" if fields else "")
        return Issue(_position(tree, path, key=True), dotted(path), f"unknown key{hint}")
    if typ == "missing":
        return Issue(_position(tree, path[:-1], key=True), dotted(path), "missing required key")
    if typ in ("union_tag_invalid", "union_tag_not_found"):
        expected = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        if typ == "union_tag_not_found":
            return Issue(_position(tree, path, key=True), dotted(path), f"needs a `kind`: one of {', '.join(expected)}")
        tag = str(ctx.get("tag"))
        kpath = (*path, "kind")
        return Issue(
            _position(tree, kpath, key=False),
            dotted(kpath),
            f"unknown kind {tag!r}; expected one of {', '.join(expected)}{_suggest(tag, expected)}",
        )
    if typ == "literal_error":
        expected = [t.strip().strip("'") for t in str(ctx.get("expected", "")).replace(" or ", ",").split(",") if t.strip()]
        got = err.get("input")
        return Issue(
            _position(tree, path, key=False),
            dotted(path),
            f"{_show(got)} is not one of {', '.join(expected)}{_suggest(str(got), expected)}",
        )
    got = err.get("input")
    detail = f" (got {_show(got)})" if not isinstance(got, dict) and typ not in ("value_error",) else ""
    return Issue(_position(tree, path, key=False), dotted(path), msg[0].lower() + msg[1:] + detail)


def _issues(e: ValidationError, tree: Tree) -> list[Issue]:
    """Convert pydantic errors to issues; merge the per-member errors of non-discriminated unions."""
    errors = e.errors(include_url=False)
    issues = [_issue(err, tree) for err in errors]
    # A union like `int | [low, high]` reports one error per member; when a member got far enough to
    # complain about an inner item, the outer "wrong type" complaint of the other member is noise.
    paths = {i.path for i in issues}
    by_path: dict[str, list[Issue]] = {}
    for err, issue in zip(errors, issues, strict=True):
        shadowed = isinstance(err.get("input"), list | dict) and any(p.startswith(issue.path + ".") for p in paths)
        if not shadowed or err["type"] in ("spec", "extra_forbidden", "missing"):
            by_path.setdefault(issue.path, []).append(issue)
    out = []
    for issues in by_path.values():
        if len(issues) == 1:
            out.append(issues[0])
        else:
            msgs = list(dict.fromkeys(i.message for i in issues))
            out.append(Issue(issues[0].where, issues[0].path, " or ".join(msgs) if len(msgs) <= 3 else msgs[0]))
    return out


# ----------------------------------------------------------------------------- public API


def load_tree(path: str, overrides: list[str] | tuple[str, ...] = ()) -> Tree:
    """Read a spec file with its `extends` chain and the overrides applied, before validation."""
    tree = _load_file(path)
    _apply_overrides(tree, overrides)
    return tree


def load_spec(path: str, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Load, merge, override and validate a spec; raise SpecError listing every problem with its position."""
    tree = load_tree(path, overrides)
    try:
        return Spec.model_validate(tree.data)
    except ValidationError as e:
        raise SpecError(_issues(e, tree)) from None


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML, every default filled in (what the run directory records)."""
    data = spec.model_dump(mode="json", by_alias=True, exclude={"extends"})
    return yaml.safe_dump(data, sort_keys=False)
