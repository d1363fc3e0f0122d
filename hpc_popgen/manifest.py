"""Job manifests: safe YAML load, JSON Schema validation, defaults resolved into a frozen Manifest.

Manifests are data, never code: YAML is read with ``yaml.safe_load`` and every key is checked
against ``storage_schemas/manifest.schema.json`` (and one schema per stage kind) before anything runs.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import yaml

from .errors import ManifestError
from .paths import SCHEMA_DIR

log = logging.getLogger(__name__)

STAGE_KINDS = ("simulate", "train", "evaluate", "scan", "demography")
STAGE_META_KEYS = ("name", "resources")


@cache
def load_schema(name: str) -> dict:
    """Read one JSON Schema from ``storage_schemas/`` (``name`` relative to it)."""
    with open(SCHEMA_DIR / name) as fh:
        return json.load(fh)


@cache
def _registry() -> referencing.Registry:
    """All schemas under ``storage_schemas/`` by their relative path, so ``$ref`` works offline."""
    resources = []
    for path in sorted(SCHEMA_DIR.rglob("*.schema.json")):
        contents = json.loads(path.read_text())
        resource = referencing.Resource.from_contents(contents)
        resources.append((contents["$id"], resource))
    return referencing.Registry().with_resources(resources)


def format_path(parts) -> str:
    """``['stages', 0, 'simulate', 'n']`` -> ``stages[0].simulate.n`` (how users read key paths)."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the key path at fault and the reason, with unknown keys named directly."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in error.schema.get("properties", {}))
        key = extra[0] if extra else "?"
        return f"{format_path(path + [key])}: unknown key {key!r} (allowed: {', '.join(allowed)})"
    return f"{format_path(path)}: {error.message}"


def validate_against(instance: Any, schema_name: str, *, source: str) -> None:
    """Validate ``instance`` against a schema; raise one ManifestError naming the first bad key path."""
    schema = load_schema(schema_name)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema, registry=_registry(), format_checker=validator_cls.FORMAT_CHECKER)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))  # None when valid
    if error is not None:
        raise ManifestError(f"{source}: {_describe(error)}")


def fill_defaults(instance: Any, schema: dict, root: dict | None = None) -> Any:
    """Return a copy of ``instance`` with every ``default`` of ``schema`` filled in, recursively.

    Defaults sit on plain ``properties`` (after resolving local and registry ``$ref``); inside a
    ``oneOf`` of objects, the branch whose ``required`` keys the mapping has (and whose other keys it
    allows) fills it. The resolved manifest written to the run directory therefore shows every value.
    """
    root = root if root is not None else schema
    schema = _deref(schema, root)
    if isinstance(instance, dict) and "oneOf" in schema and "properties" not in schema:
        branch = _object_branch(instance, [_deref(b, root) for b in schema["oneOf"]])
        return fill_defaults(instance, branch, root) if branch is not None else instance
    if isinstance(instance, dict) and "properties" in schema:
        out = dict(instance)
        for key, sub in schema["properties"].items():
            sub_r = _deref(sub, root if not _is_external(sub) else None)
            if key not in out and isinstance(sub_r, dict) and "default" in sub_r:
                out[key] = copy.deepcopy(sub_r["default"])
            if key in out:
                out[key] = fill_defaults(out[key], sub_r, root if not _is_external(sub) else sub_r)
        return out
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        ext = _is_external(items)
        items_r = _deref(items, None if ext else root)
        return [fill_defaults(v, items_r, items_r if ext else root) for v in instance]
    return instance


def _object_branch(instance: dict, branches: list[Any]) -> dict | None:
    """The one object branch of a ``oneOf`` that ``instance`` fits by its keys (None if not exactly one)."""
    fits = [b for b in branches if isinstance(b, dict) and "properties" in b
            and set(b.get("required", ())) <= set(instance) and set(instance) <= set(b["properties"])]
    return fits[0] if len(fits) == 1 else None


def schema_default(schema_name: str, *path: str) -> Any:
    """The default of one key of a schema, e.g. ``schema_default("stages/scan.schema.json", "hpdi_level")``.

    For command-line options that mirror a manifest key, so that the default still lives only in the schema.
    """
    node: Any = load_schema(schema_name)
    for key in path:
        node = _deref(node, None)["properties"][key]
    return copy.deepcopy(node["default"])


def schema_maximum(schema_name: str, *path: str) -> Any:
    """The ``maximum`` of one key of a schema, e.g. ``schema_maximum("stages/simulate.schema.json", "prior", "n")``:
    a limit that a check of several keys shares (the total images of a simulate stage) lives there, once."""
    node: Any = load_schema(schema_name)
    for key in path:
        node = _deref(node, None)["properties"][key]
    return node["maximum"]


def _is_external(schema: Any) -> bool:
    return isinstance(schema, dict) and "$ref" in schema and not schema["$ref"].startswith("#")


def _deref(schema: Any, root: dict | None) -> Any:
    """Resolve one level of ``$ref``: ``#/$defs/x`` against ``root``, anything else from storage_schemas."""
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        if ref.startswith("#"):
            if root is None:
                break
            node: Any = root
            for part in ref.lstrip("#/").split("/"):
                node = node[part]
            schema = node
        else:
            schema = load_schema(ref)
    return schema


@dataclass(frozen=True)
class StageSpec:
    """One validated stage: its kind, a unique name, parameters (defaults filled) and resources."""

    index: int
    kind: str
    name: str
    params: dict
    resources: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        if self.resources:
            out["resources"] = self.resources
        out[self.kind] = self.params
        return out


@dataclass(frozen=True)
class Manifest:
    """A validated job manifest with every default resolved; ``to_dict`` is what the run records."""

    name: str
    seed: int
    profile: str
    storage: str
    stages: tuple[StageSpec, ...]
    description: str = ""
    source: str = "<manifest>"
    base_dir: str = "."

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out.update(seed=self.seed, profile=self.profile, storage=self.storage,
                   stages=[s.to_dict() for s in self.stages])
        return out

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise ManifestError(f"{self.source}: no stage named {name!r} (stages: {', '.join(s.name for s in self.stages)})")


ALIAS_EXPANSION_LIMIT = 5000  # nodes that aliases may add to a document (a manifest's anchors add tens)
YAML_DEPTH_LIMIT = 64  # nesting levels of a YAML document (a manifest uses about 6)


class _Loader(yaml.SafeLoader):
    """SafeLoader (no tags, no code) that also reads ``4.04e6`` and ``1e-8`` as floats, as YAML 1.2 does,
    and a plain ``null`` mapping key as the string "null" (the scan stage's key), not None.

    Stricter than YAML: a key given twice in one mapping is an error (a merge key ``<<`` may still be
    overridden), and aliases may add at most ``ALIAS_EXPANSION_LIMIT`` nodes, checked on the composed
    node graph before anything is built, so an alias bomb fails at once instead of filling memory."""

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[Any, yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            same = self._key_identity(key)
            if same in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key.value!r} (first on line {first[same].start_mark.line + 1})",
                    key.start_mark)
            first[same] = key
        return node

    def _key_identity(self, key: yaml.ScalarNode) -> Any:
        """What a scalar key becomes as a Python key (``1`` and ``0x1`` are one key; ``"1"`` another)."""
        if key.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"):
            try:
                value = self.yaml_constructors[key.tag](self, key)
                return ("number", value) if value == value else ("nan", key.value)
            except (ValueError, yaml.YAMLError):
                pass
        if key.tag == "tag:yaml.org,2002:null":
            return ("str", "null") if key.value == "null" else ("null", None)
        return ("str", key.value)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > YAML_DEPTH_LIMIT:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {YAML_DEPTH_LIMIT} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _bound_aliases(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag == "tag:yaml.org,2002:null" and key.value == "null":
                key.tag = "tag:yaml.org,2002:str"
        return super().construct_mapping(node, deep)


def _bound_aliases(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand to more than ``ALIAS_EXPANSION_LIMIT`` extra nodes, or refer
    to a node that contains them: sizes are counted once per distinct node (post-order), never expanded."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node)
        if done:
            on_path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            continue
        if id(node) in size:
            continue
        if id(node) in on_path:
            raise yaml.constructor.ConstructorError(None, None, "an alias refers to a node that contains it",
                                                    node.start_mark)
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
    extra = size[id(root)] - len(size)
    if extra > ALIAS_EXPANSION_LIMIT:
        raise yaml.constructor.ConstructorError(
            None, None, f"aliases expand to {extra:,} more nodes (at most {ALIAS_EXPANSION_LIMIT:,}); "
                        "write the values out instead", root.start_mark)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))
# no base-60 numbers (YAML 1.2 has none): ``walltime: 12:00:00`` is the text, not 43200
for _first in "-+0123456789":
    _Loader.yaml_implicit_resolvers[_first].insert(
        0, ("tag:yaml.org,2002:str", re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")))


def read_yaml(path: str | Path, what: str = "manifest") -> Any:
    """Load YAML safely (no tags, no code, no duplicate keys, bounded aliases); errors name the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: {what} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                            f"offset {exc.start}); save it as UTF-8") from None
    except FileNotFoundError:
        raise ManifestError(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(f"{path}: not valid YAML{where}: {problem}") from None


def non_finite(data: Any) -> tuple[list, float] | None:
    """The key path and value of the first NaN or infinite float in parsed YAML data (None if all are finite).

    JSON Schema's ``minimum``/``maximum`` never reject NaN (every comparison with it is false), and no
    manifest or profile key takes an infinite value, so this one walk guards them all. Iterative, and each
    container is visited once (a YAML alias shares one), so neither depth nor aliases make it blow up.
    """
    stack: list[tuple[list, Any]] = [([], data)]
    seen: set[int] = set()
    while stack:
        path, node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return path, node
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            items = list(node.items() if isinstance(node, dict) else enumerate(node))
            stack.extend((path + [key], value) for key, value in reversed(items))
    return None


def check_finite(data: Any, *, source: str) -> None:
    """Raise one ManifestError naming the file and key of the first NaN or infinite number in ``data``."""
    found = non_finite(data)
    if found is not None:
        path, value = found
        raise ManifestError(f"{source}: {format_path(path)}: {value} is not a finite number")


def parse_manifest(data: Any, *, source: str = "<manifest>", base_dir: str | Path = ".") -> Manifest:
    """Validate raw manifest data and return the resolved, frozen Manifest (or raise ManifestError)."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: a manifest must be a YAML mapping with name, seed and stages")
    check_finite(data, source=source)
    stages_raw = data.get("stages")
    for i, raw in enumerate(stages_raw if isinstance(stages_raw, list) else []):  # else the schema names it
        kinds = [k for k in raw if k in STAGE_KINDS] if isinstance(raw, dict) else []
        if len(kinds) > 1:  # before the schema, whose errors for each kind would hide this one
            raise ManifestError(f"{source}: stages[{i}]: a stage needs exactly one kind key out of "
                                f"{', '.join(STAGE_KINDS)} (found: {', '.join(kinds)})")
    validate_against(data, "manifest.schema.json", source=source)
    schema = load_schema("manifest.schema.json")
    resolved = fill_defaults(data, schema)
    stages = []
    seen: set[str] = set()
    for i, raw in enumerate(resolved["stages"]):
        kinds = [k for k in raw if k in STAGE_KINDS]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ManifestError(
                f"{source}: stages[{i}]: a stage needs exactly one kind key out of "
                f"{', '.join(STAGE_KINDS)} (found: {found})")
        kind = kinds[0]
        name = raw.get("name") or (kind if kind not in seen else f"{kind}-{i}")
        if name in seen:
            raise ManifestError(f"{source}: stages[{i}].name: {name!r} is used by an earlier stage")
        seen.add(name)
        stages.append(StageSpec(index=i, kind=kind, name=name, params=raw[kind] or {},
                                resources=dict(raw.get("resources") or {})))
    manifest = Manifest(name=resolved["name"], seed=int(resolved["seed"]), profile=resolved["profile"],
                        storage=resolved["storage"], stages=tuple(stages),
                        description=resolved.get("description", ""), source=source,
                        base_dir=str(base_dir))
    return manifest


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest file, validate it against the schemas and fill in defaults.

    What a schema cannot check (each stage kind's ``check``) runs in :func:`hpc_popgen.pipeline.prepare`,
    on the typed configs.
    """
    path = Path(path)
    data = read_yaml(path)
    return parse_manifest(data, source=str(path), base_dir=path.resolve().parent)


def dump_yaml(data: Any) -> str:
    """YAML text for records in the run directory (keys in written order)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
