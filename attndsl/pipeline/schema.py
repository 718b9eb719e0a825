"""The small schema language every run-file reader checks JSON against.

A schema is a type (``int`` never accepts a bool, ``float`` accepts ints),
``None``, a tuple (any of these), ``[item]`` (a list of items),
``{"key": schema, "opt?": schema}`` (an object with these keys; other keys
are allowed), `Map` (an object whose values all match), `Int` (an integer in
a range) or `Choice` (one of some values).  `conform` says how a value
differs from a schema; `check` turns that into a `UserError` naming the file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from attndsl.errors import UserError


@dataclass(frozen=True)
class Int:
    """Schema: an integer (never a bool) in ``[low, high]`` (either end open when None)."""

    low: int | None = None
    high: int | None = None


@dataclass(frozen=True)
class Map:
    """Schema: a JSON object whose every value matches ``value``."""

    value: Any


@dataclass(frozen=True)
class Choice:
    """Schema: one of ``values``."""

    values: tuple


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
          list: "a list", None: "null", type(None): "null"}


def describe(schema: Any) -> str:
    """A schema in words (what error messages say was expected)."""
    if isinstance(schema, tuple):
        return " or ".join(describe(s) for s in schema)
    if isinstance(schema, list):
        return f"a list (each item {describe(schema[0])})" if schema else "a list"
    if isinstance(schema, dict):
        keys = [k for k in schema if not k.endswith("?")]
        return "an object" + (f" with {', '.join(repr(k) for k in keys)}" if keys else "")
    if isinstance(schema, Map):
        return f"an object whose every value is {describe(schema.value)}"
    if isinstance(schema, Choice):
        return "one of " + ", ".join(json.dumps(v) for v in schema.values)
    if isinstance(schema, Int):
        if schema.low is not None and schema.high is not None:
            return f"an integer from {schema.low} to {schema.high}"
        if schema.low is not None:
            return f"an integer >= {schema.low}"
        return "an integer" if schema.high is None else f"an integer <= {schema.high}"
    return _NAMES.get(schema, getattr(schema, "__name__", str(schema)))


def _found(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return _NAMES[type(value)]
    text = json.dumps(value) if not isinstance(value, float) or value == value else "NaN"
    return text if len(text) <= 40 else text[:37] + "..."


def _matches(value: Any, kind: Any) -> bool:
    if kind is None or kind is type(None):
        return value is None
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _leaf_test(schema: Any):
    """A fast predicate for a schema without objects in it (None if it has some)."""
    if schema is int:
        return lambda x: type(x) is int
    if schema is float:
        return lambda x: type(x) is float or type(x) is int
    if schema is str:
        return lambda x: type(x) is str
    if isinstance(schema, Int):
        low = -float("inf") if schema.low is None else schema.low
        high = float("inf") if schema.high is None else schema.high
        return lambda x: type(x) is int and low <= x <= high
    if isinstance(schema, Choice):
        allowed = {(type(v), v) for v in schema.values}
        return lambda x: (type(x), x) in allowed
    if isinstance(schema, list) and schema:
        inner = _leaf_test(schema[0])
        if inner is not None:
            return lambda x: type(x) is list and all(map(inner, x))
    plain = {int: (int,), float: (int, float), str: (str,), bool: (bool,), None: (type(None),)}
    if isinstance(schema, tuple) and all(s in plain for s in schema):
        types = frozenset(t for s in schema for t in plain[s])
        return lambda x: type(x) in types
    if isinstance(schema, tuple):
        tests = [_leaf_test(s) if s is not None else (lambda x: x is None) for s in schema]
        if all(t is not None for t in tests):
            return lambda x: any(t(x) for t in tests)
    return None


def conform(value: Any, schema: Any, where: str = "") -> str | None:
    """The first way ``value`` differs from ``schema`` (a phrase naming where), or None.

    Recursion follows the schema, never the data, so its depth is fixed by
    the code however deep the value is.
    """
    at = where or "the top level"
    if isinstance(schema, tuple):
        problems = [conform(value, option, where) for option in schema]
        if all(problems):
            for option, problem in zip(schema, problems):  # the right kind of container: say what is inside
                if isinstance(value, dict) and isinstance(option, (dict, Map)) \
                        or isinstance(value, list) and isinstance(option, list):
                    return problem
            return f"{at} must be {describe(schema)}, not {_found(value)}"
        return None
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"{at} must be {describe(schema)}, not {_found(value)}"
        if schema:
            test = _leaf_test(schema[0])
            if test is not None and all(map(test, value)):  # the common case, fast: no call per item
                return None
            for i, item in enumerate(value):
                problem = conform(item, schema[0], f"{where}[{i}]")
                if problem:
                    return problem
        return None
    if isinstance(schema, (dict, Map)):
        if not isinstance(value, dict):
            return f"{at} must be {describe(schema)}, not {_found(value)}"
        items = schema.items() if isinstance(schema, dict) else ((k + "?", schema.value) for k in value)
        for key, sub in items:
            name = key[:-1] if key.endswith("?") else key
            if name not in value:
                if key.endswith("?"):
                    continue
                return f"{at} lacks the key {name!r}"
            problem = conform(value[name], sub, f"{where}.{name}" if where else name)
            if problem:
                return problem
        return None
    if isinstance(schema, Choice):
        if not any(_matches(value, type(v)) and value == v for v in schema.values):
            return f"{at} must be {describe(schema)}, not {_found(value)}"
        return None
    if isinstance(schema, Int):
        if not _matches(value, int) or (schema.low is not None and value < schema.low) \
                or (schema.high is not None and value > schema.high):
            return f"{at} must be {describe(schema)}, not {_found(value)}"
        return None
    if not _matches(value, schema):
        return f"{at} must be {describe(schema)}, not {_found(value)}"
    return None


def check(value: Any, schema: Any, path: str | os.PathLike, where: str = "") -> Any:
    """``value`` if it matches ``schema``; else a `UserError` naming the file and the place."""
    problem = conform(value, schema, where)
    if problem:
        raise UserError(f"{path} is damaged: {problem}")
    return value
