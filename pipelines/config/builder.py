"""The typed builder: a YAML mapping -> a config dataclass, each value checked against its field's type.

Every section of a recipe (and the `search` section) is built by `build`, so an unknown or mistyped key reads
the same everywhere: the error names the dotted key and the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import typing
from dataclasses import field
from typing import Any

from pipelines.errors import HubtuneError


def require_one_of(key: str, value: Any, choices: typing.Sequence[str]) -> None:
    """`value` of recipe key `key` must be one of `choices`."""
    if value not in choices:
        raise HubtuneError(f"recipe key '{key}' must be one of {', '.join(choices)}, got {value!r}")


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A config field with its help text, which `hubtune recipe-keys TASK` prints."""
    return field(default=default, metadata={"help": help}, **kwargs)


def factory(make: Any, help: str) -> Any:
    return field(default_factory=make, metadata={"help": help})


def closest(key: str, valid: typing.Iterable[str], prefix: str = "", noun: str = "keys") -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    if match:
        return f"; did you mean '{prefix}{match[0]}'?"
    return f"; valid {noun}: {', '.join(sorted(valid))}"


def fits_type(value: Any, annotation: Any) -> bool:
    """Does `value` fit the type `annotation` (of a TrainingArguments field)?"""
    if annotation is Any or value is None:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(fits_type(value, member) for member in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin is not None:
        return isinstance(value, origin)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {member.value for member in annotation} or isinstance(value, annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check and convert one YAML value against a dataclass field type, naming `where` on failure."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) > 1:  # `str | list[str]`: the member the value's own type fits
            fitting = [member for member in members if fits_type(value, member)]
            if not fitting:
                kinds = " or ".join(getattr(typing.get_origin(m) or m, "__name__", str(m)) for m in members)
                raise HubtuneError(f"recipe key '{where}' must be {kinds}, got {value!r}")
            members = fitting[:1]
        return coerce(value, members[0], where)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise HubtuneError(f"recipe key '{where}' must be a mapping, got {value!r}")
        return build(annotation, value, where + ".")
    if origin is list:
        if not isinstance(value, list):
            raise HubtuneError(f"recipe key '{where}' must be a list, got {value!r}")
        return [coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise HubtuneError(f"recipe key '{where}' must be a mapping, got {value!r}")
        return {str(k): v if args[1] is Any else coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise HubtuneError(f"recipe key '{where}' must be true or false, got {value!r}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is str and isinstance(value, bool):
        # YAML reads unquoted true/false as booleans, which a text key (a label name, say) never means.
        raise HubtuneError(f"recipe key '{where}' must be text, got {value!r}: quote it ('{value}') to mean the word")
    if annotation in (int, float, str) and (not isinstance(value, annotation) or isinstance(value, bool)):
        raise HubtuneError(f"recipe key '{where}' must be {annotation.__name__}, got {value!r}")
    return value


def build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise HubtuneError(f"unknown recipe key '{prefix}{key}'{closest(key, names, prefix)}")
    return cls(**{key: coerce(value, hints[key], prefix + key) for key, value in values.items()})
