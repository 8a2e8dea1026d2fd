"""The JSON Schemas in `schemas/` (in the package as `fhirauth/schemas`): loaded and compiled once,
every violation reported as an Issue."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from importlib.resources.abc import Traversable
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError  # type: ignore[import-untyped]  # jsonschema ships no type information
from jsonschema.validators import extend  # type: ignore[import-untyped]  # jsonschema ships no type information

from fhirauth.errors import Invalid, Issue
from fhirauth.resources.paths import render_path


@lru_cache(maxsize=256)
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    """Compile a schema `pattern` with ECMA-262's `$`, which (unlike Python's) never matches before a
    final newline: `^[a-z]+$` must refuse "abc\\n"."""
    translated: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        translated.append(char)
    return re.compile("".join(translated))


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Keyword implementations that place each error at the property it is about (jsonschema reports a
# missing or unexpected property at its parent) and use ECMA regex semantics.


def _required(validator: Any, required: list[str], instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "object"):
        for name in required:
            if name not in instance:
                yield ValidationError(f"required property {name!r} is missing", path=(name,))


def _additional_properties(
    validator: Any, allowed: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    patterns = [_ecma_regex(pattern) for pattern in schema.get("patternProperties", {})]
    for name in instance:
        if name in known or any(pattern.search(name) for pattern in patterns):
            continue
        if allowed is False:
            yield ValidationError(f"unknown property {name!r}", path=(name,))
        elif validator.is_type(allowed, "object"):
            yield from validator.descend(instance[name], allowed, path=name)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"{_shown(instance)} does not match the pattern {pattern}")


_CACHE_LIMIT = 4096
# Passes when the instance certainly meets one keyword of a subschema (a False may be wrong).
Check = Callable[[Any, Any], bool]
_checks_of: dict[int, tuple[object, tuple[Check, ...] | None]] = {}
# The Python types whose instances certainly are of a JSON type (bool is an int: integers left out).
_CERTAINLY = {"string": str, "object": dict, "array": list, "boolean": bool, "null": type(None)}


def _keyword_check(keyword: Callable[..., Any], expected: Any, schema: Any) -> Check:
    def passes(validator: Any, instance: Any) -> bool:
        return next(iter(keyword(validator, expected, instance, schema) or ()), None) is None

    return passes


def _type_check(keyword: Callable[..., Any], expected: Any, schema: Any) -> Check:
    # Half the keyword calls of a typical resource; a plain str is a string without asking jsonschema.
    certain = _CERTAINLY.get(expected) if isinstance(expected, str) else None
    general = _keyword_check(keyword, expected, schema)
    return lambda validator, instance: type(instance) is certain or general(validator, instance)


def _in_place_checks(validator: Any, schema: object) -> tuple[Check, ...] | None:
    """Checks of a subschema's keywords that hold as they would under its own validator, or None.

    `descend` builds a validator for each subschema, with the class its `$schema` names and a
    resolver rebased on its `$id`; for a subschema with neither, that validator would be the
    parent's with another `schema`, and keyword functions read the schema they are passed.
    Cached by identity: each entry holds its subschema, so that an id is never reused under it.
    """
    cached = _checks_of.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    checks: tuple[Check, ...] | None = None
    if isinstance(schema, dict) and "$id" not in schema and "$schema" not in schema:
        keywords = validator.VALIDATORS
        checks = tuple(
            (_type_check if key == "type" else _keyword_check)(keywords[key], value, schema)
            for key, value in schema.items()
            if key in keywords
        )
    if len(_checks_of) >= _CACHE_LIMIT:
        _checks_of.clear()
    _checks_of[id(schema)] = (schema, checks)
    return checks


def _properties(
    validator: Any, properties: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """jsonschema's `properties`, with a shortcut for the common case of a valid property.

    Descending into a subschema builds a validator for it, which costs more than the checks it runs
    (for a User, two thirds of its validation). A subschema that validates the same under this
    validator is checked here, by jsonschema's own keyword functions; only when one of them may
    object does the property go through `descend`, so every error is reported exactly as before.
    """
    if not validator.is_type(instance, "object"):
        return
    for name, subschema in properties.items():
        if name not in instance:
            continue
        value = instance[name]
        checks = _in_place_checks(validator, subschema)
        if checks is not None and all(passes(validator, value) for passes in checks):
            continue
        yield from validator.descend(value, subschema, path=name, schema_path=name)


_Validator = extend(
    Draft202012Validator,
    validators={
        "required": _required,
        "additionalProperties": _additional_properties,
        "pattern": _pattern,
        "properties": _properties,
    },
)

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*\Z")
_FORMATS = FormatChecker(formats=())


def _is_uri(value: object) -> bool:
    """An absolute URI (RFC 3986 §4.3): a scheme, then only URI characters and %-escapes."""
    return not isinstance(value, str) or _URI.match(value) is not None


def _is_regex(value: object) -> bool:
    return not isinstance(value, str) or bool(_ecma_regex(value))


_FORMATS.checks("uri")(_is_uri)
_FORMATS.checks("regex", raises=re.error)(_is_regex)


_ANNOTATIONS = frozenset({"$ref", "title", "description", "$comment"})
_NEW_BASE = frozenset({"$id", "$anchor", "$dynamicAnchor"})


def _inline_local_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace each plain `{"$ref": "#/$defs/name"}` by a copy of that definition (recursive ones stay).

    jsonschema resolves a `$ref` on every validation, which costs more than the checks behind it
    (a typical User validates about 20% faster inlined). The result is equivalent because only
    definitions without a base URI of their own are inlined, and only references without sibling
    keywords that could interact with the definition's.
    """
    defs = schema.get("$defs", {})

    def expand(node: Any, expanding: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [expand(item, expanding) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and node.keys() <= _ANNOTATIONS:
            name = ref.removeprefix("#/$defs/")
            if name in defs and name not in expanding and not defs[name].keys() & _NEW_BASE:
                annotations = {key: value for key, value in node.items() if key != "$ref"}
                return {**expand(defs[name], expanding | {name}), **annotations}
        return {key: expand(value, expanding) for key, value in node.items()}

    inlined: dict[str, Any] = expand(schema, frozenset())
    return inlined


def _message(error: ValidationError) -> str:
    keyword, expected = error.validator, error.validator_value
    if keyword == "type":
        return "expected " + " or ".join([expected] if isinstance(expected, str) else expected)
    if keyword == "enum":
        return f"{_shown(error.instance)} is not one of {expected!r}"
    if keyword == "const":
        return f"expected {expected!r}"
    if keyword == "format":
        return f"{_shown(error.instance)} is not a valid {expected}"
    if keyword == "minLength":
        return "expected a non-empty string" if expected == 1 else f"expected at least {expected} characters"
    if keyword == "maxLength":
        return f"expected at most {expected} characters"
    if keyword == "minimum":
        return f"expected a number >= {expected}"
    if keyword == "maximum":
        return f"expected a number <= {expected}"
    if keyword == "minItems":
        return f"expected at least {expected} item(s)"
    return str(error.message)


def _sort_key(path: tuple[str | int, ...]) -> tuple[tuple[int, int, str], ...]:
    # Indices sort numerically ([2] before [10]) and before names.
    return tuple((0, segment, "") if isinstance(segment, int) else (1, 0, segment) for segment in path)


class SchemaRegistry:
    def __init__(self, schemas: Mapping[str, dict[str, Any]]) -> None:
        self._schemas = dict(schemas)
        self._validators = {
            type_: _Validator(_inline_local_refs(schema), format_checker=_FORMATS)
            for type_, schema in self._schemas.items()
        }
        self.types: frozenset[str] = frozenset(self._schemas)

    @classmethod
    def from_directory(cls, path: Traversable) -> SchemaRegistry:
        """Load `<Type>.json` for every type; a malformed schema fails here, at start-up.

        `path` is a directory, or the package's own schemas as `importlib.resources` finds them.
        """
        schemas: dict[str, dict[str, Any]] = {}
        files = [entry for entry in path.iterdir() if entry.name.endswith(".json")] if path.is_dir() else []
        for file in sorted(files, key=lambda file: file.name):
            resource_type = file.name.removesuffix(".json")
            schema = json.loads(file.read_text(encoding="utf-8"))
            _Validator.check_schema(schema)
            if schema.get("properties", {}).get("resourceType") != {"const": resource_type}:
                raise ValueError(f"{file}: properties.resourceType must be {{'const': {resource_type!r}}}")
            schemas[resource_type] = schema
        if not schemas:
            raise ValueError(f"No resource schemas in {path}")
        return cls(schemas)

    def schema(self, resource_type: str) -> dict[str, Any]:
        """The schema of a known type (KeyError for an unknown one)."""
        return self._schemas[resource_type]

    def validate(self, resource: object) -> None:
        """Raise Invalid listing every violation, sorted by path, or return None."""
        if not isinstance(resource, dict):
            raise Invalid("expected object")
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str) or resource_type not in self._validators:
            raise Invalid(f"unknown resource type {_shown(resource_type)}", "resourceType")
        validator = self._validators[resource_type]
        errors = [(tuple(error.absolute_path), _message(error)) for error in validator.iter_errors(resource)]
        if not errors:
            return
        errors.sort(key=lambda error: (_sort_key(error[0]), error[1]))
        issues = [Issue(message, "invalid", (render_path(path, resource_type),)) for path, message in errors]
        first = issues[0]
        summary = f"{first.expression[0]}: {first.diagnostics}"
        if len(issues) > 1:
            summary += f" (and {len(issues) - 1} more)"
        raise Invalid(summary, issues=issues)
