"""Check a Stripe object (a plain dict, as JSON) against the stripe SDK's own definition of it.

stripe-python's resource classes (``stripe/_subscription.py``, ``stripe/_invoice.py``,
``stripe/checkout/_session.py``, ...) are generated from Stripe's OpenAPI spec for the pinned
API version: each field is a class annotation whose type says what it holds and whether it may
be null (``Optional``), with nested objects as inner classes. :func:`violations` reads those
annotations with ``typing.get_type_hints`` and walks the object against them, recursively:

* a field the class does not declare is a violation (the fake invented or misplaced it, e.g. a
  top-level ``current_period_end`` that this version keeps on the items);
* a declared, non-``Optional`` field that is missing or null is a violation;
* a value must have the declared type: ``str``, ``int``, ``bool``, a ``Literal`` value, a list,
  a ``ListObject`` (``{"object": "list", "data": [...]}``), an expandable id or object, or a
  nested object, checked the same way. An event's ``data.object`` is checked as the class its
  ``object`` names (``stripe._object_classes``).

The SDK's annotations refer to other resources through ``TYPE_CHECKING`` imports, which
``get_type_hints`` cannot see; they are resolved from each module's own import statements.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import sys
import types
import typing
from decimal import Decimal
from typing import Any, Literal, Union, get_args, get_origin

import stripe
from stripe._list_object import ListObject
from stripe._object_classes import get_object_class
from stripe._stripe_object import StripeObject

# Fields every object may carry that the classes keep outside their annotations.
_ALWAYS = frozenset({"object"})


@functools.cache
def _module_namespace(module_name: str) -> dict[str, Any]:
    """The module's globals plus every name its import statements bring in, those under
    ``if TYPE_CHECKING:`` included."""
    module = sys.modules[module_name]
    namespace = dict(vars(module))
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name == "*":
                    continue
                try:
                    source = importlib.import_module(node.module)
                    namespace[alias.asname or alias.name] = getattr(source, alias.name)
                except (ImportError, AttributeError):
                    continue
    return namespace


_FIELDS: dict[str, dict[str, Any]] = {}


def fields(cls: type[StripeObject]) -> dict[str, Any]:
    """The fields ``cls`` declares, with their resolved types."""
    name = f"{cls.__module__}.{cls.__qualname__}"
    if name not in _FIELDS:
        _FIELDS[name] = _fields(cls)
    return _FIELDS[name]


def _fields(cls: type[StripeObject]) -> dict[str, Any]:
    owner: Any = sys.modules[cls.__module__]
    local: dict[str, Any] = {}
    for part in cls.__qualname__.split("."):
        owner = getattr(owner, part)
        local.update(vars(owner))
    # The base classes' annotations are evaluated in the same namespace: theirs too (a class
    # whose module does not import ``StripeObject`` inherits its forward references to it).
    namespace: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__ in sys.modules and klass.__module__.startswith("stripe"):
            namespace.update(_module_namespace(klass.__module__))
    hints = typing.get_type_hints(cls, globalns=namespace, localns=local)
    declared: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is StripeObject or not issubclass(klass, StripeObject):
            continue
        for name in vars(klass).get("__annotations__", {}):
            if not name.startswith("_") and name != "OBJECT_NAME" and name in hints:
                declared.setdefault(name, hints[name])
    return declared


def _nullable(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def violations(obj: Any, cls: type[StripeObject], path: str = "$") -> list[str]:
    """Every way ``obj`` departs from ``cls``'s definition, as ``"<path>: <problem>"``."""
    if not isinstance(obj, dict):
        return [f"{path}: expected an object, got {type(obj).__name__}"]
    declared = fields(cls)
    problems = [
        f"{path}.{name}: not a field of {cls.__qualname__}"
        for name in obj
        if name not in declared and name not in _ALWAYS
    ]
    if obj.get("deleted") is True:  # a deleted object: its id, object and deleted only
        return problems
    for name, tp in declared.items():
        if name not in obj:
            if not _nullable(tp):
                problems.append(f"{path}.{name}: required by {cls.__qualname__}, missing")
            continue
        problems += _check(obj[name], tp, f"{path}.{name}")
    if cls is stripe.Event and isinstance(obj.get("data"), dict):
        inner = obj["data"].get("object")
        if isinstance(inner, dict) and isinstance(inner.get("object"), str):
            problems += violations(
                inner, get_object_class("V1", inner["object"]), f"{path}.data.object"
            )
    return problems


def _check(value: Any, tp: Any, path: str) -> list[str]:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return []
    if origin in (Union, types.UnionType):
        if value is None:
            return [] if type(None) in args else [f"{path}: null, but not nullable"]
        attempts = [_check(value, arg, path) for arg in args if arg is not type(None)]
        return [] if any(not a for a in attempts) else min(attempts, key=len)
    if value is None:
        return [f"{path}: null, but not nullable"]
    if origin is Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {args}"]
    if origin in (list, typing.List):  # noqa: UP006 - the SDK's annotations use typing.List
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value) for p in _check(item, args[0], f"{path}[{i}]")]
    if origin in (dict, typing.Dict):  # noqa: UP006
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        return [p for k, v in value.items() for p in _check(v, args[1], f"{path}.{k}")]
    if inspect.isclass(origin) and issubclass(origin, ListObject):
        if not isinstance(value, dict) or value.get("object") != "list":
            return [f"{path}: expected a list object"]
        data = value.get("data")
        if not isinstance(data, list):
            return [f"{path}.data: expected a list"]
        return [
            p for i, item in enumerate(data) for p in _check(item, args[0], f"{path}.data[{i}]")
        ]
    if inspect.isclass(origin) and issubclass(origin, StripeObject):  # UntypedStripeObject[T]
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        return [p for k, v in value.items() for p in _check(v, args[0], f"{path}.{k}")]
    if inspect.isclass(tp) and issubclass(tp, StripeObject):
        if tp.__name__ == "UntypedStripeObject" or not fields(tp):
            return [] if isinstance(value, dict) else [f"{path}: expected an object"]
        return violations(value, tp, path)
    return _check_scalar(value, tp, path)


def _check_scalar(value: Any, tp: Any, path: str) -> list[str]:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif tp is str or tp is Decimal:  # decimal_string fields travel as strings
        ok = isinstance(value, str)
    else:
        return []  # a type this walk does not model: accepted
    return [] if ok else [f"{path}: {value!r} is not a {tp.__name__}"]


def check(obj: dict[str, Any], cls: type[StripeObject] | None = None) -> None:
    """Raise ``AssertionError`` listing every violation (``cls`` from ``obj["object"]`` if not
    given)."""
    target = cls or get_object_class("V1", obj["object"])
    problems = violations(obj, target)
    assert not problems, "\n".join(problems)
