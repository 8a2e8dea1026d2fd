"""PATCH documents: JSON Merge Patch (RFC 7396) and JSON Patch (RFC 6902). Inputs are never mutated.

A patch document that is malformed in itself is a 400 (BadRequest); a well-formed patch that does
not fit the resource (a missing path, a failed `test`) is a 422 (Invalid).
"""

from __future__ import annotations

import copy
import re
from typing import Any, overload

import jsonpatch
import jsonpointer

from fhirauth.errors import BadRequest, Invalid

# RFC 6901 §3: "" or a sequence of "/" + reference token, where "~" only appears as ~0 or ~1.
_POINTER = re.compile(r"(/([^~/]|~[01])*)*\Z")


@overload
def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]: ...
@overload
def merge_patch(target: object, patch: object) -> object: ...
def merge_patch(target: object, patch: object) -> object:
    """RFC 7396 §2 MergePatch(Target, Patch); an object patch always gives an object."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    return _merge(copy.deepcopy(target), patch)


def _merge(owned: object, patch: object) -> object:
    # `owned` is already a copy, so it is updated in place; values from the patch are copied.
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = owned if isinstance(owned, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = _merge(result.get(name), value)
    return result


def _compile(index: int, operation: object) -> jsonpatch.JsonPatch:
    if not isinstance(operation, dict):
        raise BadRequest(f"Operation {index}: expected an object")
    for member in ("path", "from"):
        pointer = operation.get(member)
        if isinstance(pointer, str) and not _POINTER.match(pointer):
            raise BadRequest(f"Operation {index}: '{member}' is not a JSON Pointer: {pointer!r}")
    try:
        # JsonPatch checks the shape of the operation itself.
        return jsonpatch.JsonPatch([operation])
    except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException) as error:
        raise BadRequest(f"Operation {index}: {error}") from None


def _describe(index: int, operation: dict[str, Any]) -> str:
    op, path = operation["op"], operation["path"]
    if op in ("move", "copy"):
        return f"Operation {index} ({op} {operation['from']!r} to {path!r})"
    return f"Operation {index} ({op} {path!r})"


def _reason(error: Exception) -> str:
    # Messages that come from jsonpointer can quote the whole document: never echo those.
    if isinstance(error, jsonpatch.JsonPatchPathNotFound | jsonpointer.JsonPointerException) or isinstance(
        error.__context__, jsonpointer.JsonPointerException
    ):
        return "the location does not exist"
    if isinstance(error, jsonpatch.JsonPatchTestFailed):
        return "the value is different"
    return str(error)


def json_patch(target: dict[str, Any], operations: object) -> dict[str, Any]:
    """Apply an RFC 6902 patch to a copy of `target`; the result must still be an object."""
    if not isinstance(operations, list):
        raise BadRequest("A JSON Patch must be an array of operations")
    steps = [_compile(index, operation) for index, operation in enumerate(operations)]
    document: object = copy.deepcopy(target)
    for index, step in enumerate(steps):
        try:
            document = step.apply(document, in_place=True)
        except jsonpatch.InvalidJsonPatch as error:
            raise BadRequest(f"Operation {index}: {error}") from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
            raise Invalid(f"{_describe(index, operations[index])}: {_reason(error)}") from None
    if not isinstance(document, dict):
        raise Invalid("A JSON Patch must leave the resource a JSON object")
    return document
