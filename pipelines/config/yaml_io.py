"""Reading recipe YAML: YAML 1.2 scalars, a repeated key as an error, dotted `key=value` overrides."""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import HubtuneError, require_path


class RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 scalars: `no`/`yes`/`on`/`off` stay strings and `1e-4` is a float.

    PyYAML follows YAML 1.1, where `eval_strategy: no` reads as False and `learning_rate: 1e-4` as a string.
    """


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+0123456789.")
)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=RecipeLoader)


def read_recipe_yaml(text: str) -> tuple[Any, tuple[str, int, int] | None]:
    """The recipe's values and its first repeated key (`duplicate_key`), from one parse of the text."""
    loader = RecipeLoader(text)
    try:
        node = loader.get_single_node()
        repeated = duplicate_key(node)  # first: it refuses a self-referring alias that constructing would build
        return (loader.construct_document(node) if node is not None else None), repeated
    finally:
        loader.dispose()


class SelfReferringAlias(yaml.YAMLError):
    """A YAML alias inside the node it names: PyYAML builds a structure that contains itself, which every later
    step would follow forever."""


def duplicate_key(
    node: yaml.Node | None, path: tuple[str, ...] = (), ancestors: tuple[int, ...] = (), seen: set[int] | None = None
) -> tuple[str, int, int] | None:
    """The first key that a YAML mapping repeats, as (dotted path, first line, second line); PyYAML itself keeps
    the last value without a word. A node reached again through an alias is checked once (so aliases of aliases
    cost nothing), and one that contains its own alias is a `SelfReferringAlias`."""
    if node is None:
        return None
    seen = set() if seen is None else seen
    if id(node) in ancestors:
        raise SelfReferringAlias(
            f"the alias at line {node.start_mark.line + 1} ('{'.'.join(path)}') refers to a node that contains it"
        )
    if id(node) in seen:
        return None
    seen.add(id(node))
    ancestors = (*ancestors, id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in lines and key != "<<":
                return ".".join((*path, key)), lines[key], line
            lines[key] = line
            found = duplicate_key(value_node, (*path, key), ancestors, seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = duplicate_key(item, (*path[:-1], f"{path[-1] if path else ''}[{index}]"), ancestors, seen)
            if found:
                return found
    return None


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise HubtuneError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value), the value read as YAML so `3`, `true`, `[q, v]` get their types."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise HubtuneError(f"override '{text}' is not of the form key=value")
    try:
        value = read_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise HubtuneError(f"override '{text}': value does not parse as YAML ({error})") from error
    return key.strip(), value


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """A recipe file's values as written, unvalidated (the mapping `load_recipe_config` starts from)."""
    path = Path(path)
    require_path(path, "file", "recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise HubtuneError(
            f"recipe file '{path}' is not UTF-8 text (byte {error.start} cannot be read as UTF-8); save it as UTF-8"
        ) from error
    try:
        tree, repeated = read_recipe_yaml(text)
        tree = tree or {}
    except yaml.YAMLError as error:
        raise HubtuneError(f"recipe file '{path}' does not parse as YAML: {error}") from error
    if repeated:
        key, first, second = repeated
        raise HubtuneError(f"recipe file '{path}' sets '{key}' twice (lines {first} and {second}); keep one")
    if not isinstance(tree, dict):
        raise HubtuneError(f"recipe file '{path}' must hold a mapping of sections, not {type(tree).__name__}")
    return tree


def apply_overrides(tree: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """A copy of `tree` with dotted `key=value` overrides set; the caller's nested dicts are not written into."""
    tree = copy.deepcopy(tree)
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(tree, key, value)
    return tree
