from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhirauth.errors import BadRequest, Invalid
from fhirauth.resources.patch import json_patch, merge_patch


def same_json(a: object, b: object) -> bool:
    """Equal as JSON: unlike ==, true is not 1 and key order does not matter."""
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(b, option=orjson.OPT_SORT_KEYS)


# RFC 7396 Appendix A, verbatim: ORIGINAL, PATCH, RESULT.
RFC7396_APPENDIX_A = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a": {"b": "c"}}', '{"a": {"b": "d","c": null}}', '{"a": {"b": "d"}}'),
    ('{"a": [{"b":"c"}]}', '{"a": [1]}', '{"a": [1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]

# RFC 7396 §3, the example document.
RFC7396_SECTION_3 = (
    """{
       "title": "Goodbye!",
       "author" : {
         "givenName" : "John",
         "familyName" : "Doe"
       },
       "tags":[ "example", "sample" ],
       "content": "This will be unchanged"
     }""",
    """{
       "title": "Hello!",
       "phoneNumber": "+01-123-456-7890",
       "author": {
         "familyName": null
       },
       "tags": [ "example" ]
     }""",
    """{
       "title": "Hello!",
       "author" : {
         "givenName" : "John"
       },
       "tags": [ "example" ],
       "content": "This will be unchanged",
       "phoneNumber": "+01-123-456-7890"
     }""",
)


@pytest.mark.parametrize(
    ("original", "patch", "result"),
    [*RFC7396_APPENDIX_A, RFC7396_SECTION_3],
    ids=[f"A-{n}" for n in range(1, 16)] + ["section-3"],
)
def test_merge_patch_rfc7396(original: str, patch: str, result: str) -> None:
    target, document = json.loads(original), json.loads(patch)
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(document)
    assert same_json(merge_patch(target, document), json.loads(result))
    assert same_json(target, target_before) and same_json(document, patch_before)


# RFC 6902 Appendix A, verbatim: (section, target, patch, result); a result of None is an error.
# A.13 is left out: it is about duplicate member names, which the JSON parser resolves before a
# patch exists, so there is nothing for json_patch to refuse.
RFC6902_APPENDIX_A = [
    (
        "A.1",
        '{ "foo": "bar"}',
        '[ { "op": "add", "path": "/baz", "value": "qux" } ]',
        '{ "baz": "qux", "foo": "bar" }',
    ),
    (
        "A.2",
        '{ "foo": [ "bar", "baz" ] }',
        '[ { "op": "add", "path": "/foo/1", "value": "qux" } ]',
        '{ "foo": [ "bar", "qux", "baz" ] }',
    ),
    ("A.3", '{ "baz": "qux", "foo": "bar" }', '[ { "op": "remove", "path": "/baz" } ]', '{ "foo": "bar" }'),
    (
        "A.4",
        '{ "foo": [ "bar", "qux", "baz" ] }',
        '[ { "op": "remove", "path": "/foo/1" } ]',
        '{ "foo": [ "bar", "baz" ] }',
    ),
    (
        "A.5",
        '{ "baz": "qux", "foo": "bar" }',
        '[ { "op": "replace", "path": "/baz", "value": "boo" } ]',
        '{ "baz": "boo", "foo": "bar" }',
    ),
    (
        "A.6",
        '{ "foo": { "bar": "baz", "waldo": "fred" }, "qux": { "corge": "grault" } }',
        '[ { "op": "move", "from": "/foo/waldo", "path": "/qux/thud" } ]',
        '{ "foo": { "bar": "baz" }, "qux": { "corge": "grault", "thud": "fred" } }',
    ),
    (
        "A.7",
        '{ "foo": [ "all", "grass", "cows", "eat" ] }',
        '[ { "op": "move", "from": "/foo/1", "path": "/foo/3" } ]',
        '{ "foo": [ "all", "cows", "eat", "grass" ] }',
    ),
    (
        "A.8",
        '{ "baz": "qux", "foo": [ "a", 2, "c" ] }',
        '[ { "op": "test", "path": "/baz", "value": "qux" },'
        '  { "op": "test", "path": "/foo/1", "value": 2 } ]',
        '{ "baz": "qux", "foo": [ "a", 2, "c" ] }',
    ),
    ("A.9", '{ "baz": "qux" }', '[ { "op": "test", "path": "/baz", "value": "bar" } ]', None),
    (
        "A.10",
        '{ "foo": "bar" }',
        '[ { "op": "add", "path": "/child", "value": { "grandchild": { } } } ]',
        '{ "foo": "bar", "child": { "grandchild": { } } }',
    ),
    (
        "A.11",
        '{ "foo": "bar" }',
        '[ { "op": "add", "path": "/baz", "value": "qux", "xyz": 123 } ]',
        '{ "foo": "bar", "baz": "qux" }',
    ),
    ("A.12", '{ "foo": "bar" }', '[ { "op": "add", "path": "/baz/bat", "value": "qux" } ]', None),
    (
        "A.14",
        '{ "/": 9, "~1": 10 }',
        '[ {"op": "test", "path": "/~01", "value": 10} ]',
        '{ "/": 9, "~1": 10 }',
    ),
    ("A.15", '{ "/": 9, "~1": 10 }', '[ {"op": "test", "path": "/~01", "value": "10"} ]', None),
    (
        "A.16",
        '{ "foo": ["bar"] }',
        '[ { "op": "add", "path": "/foo/-", "value": ["abc", "def"] } ]',
        '{ "foo": ["bar", ["abc", "def"]] }',
    ),
]


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [vector[1:] for vector in RFC6902_APPENDIX_A],
    ids=[vector[0] for vector in RFC6902_APPENDIX_A],
)
def test_json_patch_rfc6902(target: str, patch: str, result: str | None) -> None:
    document, operations = json.loads(target), json.loads(patch)
    document_before, operations_before = copy.deepcopy(document), copy.deepcopy(operations)
    if result is None:
        with pytest.raises(Invalid):
            json_patch(document, operations)
    else:
        assert same_json(json_patch(document, operations), json.loads(result))
    assert same_json(document, document_before) and same_json(operations, operations_before)


@pytest.mark.parametrize(
    ("target", "operations", "message"),
    [
        (
            {"baz": "qux"},
            [{"op": "test", "path": "/baz", "value": "bar"}],
            "Operation 0 (test '/baz'): the value is different",
        ),
        (
            {"a": 1},
            [{"op": "test", "path": "/a", "value": True}],
            "Operation 0 (test '/a'): the value is different",
        ),
        (
            {"a": 1},
            [{"op": "test", "path": "/b", "value": 1}],
            "Operation 0 (test '/b'): the location does not exist",
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz/bat", "value": "qux"}],
            "Operation 0 (add '/baz/bat'): the location does not exist",
        ),
        (
            {"a": {"password": "hunter2"}},
            [{"op": "add", "path": "/b", "value": 1}, {"op": "remove", "path": "/a/secret"}],
            "Operation 1 (remove '/a/secret'): the location does not exist",
        ),
        (
            {"a": [1]},
            [{"op": "replace", "path": "/a/1", "value": 2}],
            "Operation 0 (replace '/a/1'): the location does not exist",
        ),
        (
            {"a": [1]},
            [{"op": "add", "path": "/a/2", "value": 2}],
            "Operation 0 (add '/a/2'): can't insert outside of list",
        ),
        (
            {"a": [1]},
            [{"op": "remove", "path": "/a/01"}],
            "Operation 0 (remove '/a/01'): the location does not exist",
        ),
        (
            {"a": [1]},
            [{"op": "remove", "path": "/a/-"}],
            "Operation 0 (remove '/a/-'): the location does not exist",
        ),
        (
            {"a": "text"},
            [{"op": "add", "path": "/a/0", "value": 1}],
            "Operation 0 (add '/a/0'): the location does not exist",
        ),
        (
            {"a": 1},
            [{"op": "copy", "from": "/b", "path": "/c"}],
            "Operation 0 (copy '/b' to '/c'): the location does not exist",
        ),
        (
            {"a": {"b": 1}},
            [{"op": "move", "from": "/a", "path": "/a/b/c"}],
            "Operation 0 (move '/a' to '/a/b/c'): Cannot move values into their own children",
        ),
        (
            {"a": 1},
            [{"op": "remove", "path": ""}],
            "Operation 0 (remove ''): can't remove the whole document",
        ),
        (
            {"a": 1},
            [{"op": "replace", "path": "", "value": [1]}],
            "A JSON Patch must leave the resource a JSON object",
        ),
    ],
)
def test_patches_that_do_not_fit_the_resource_are_422(
    target: dict[str, Any], operations: list[Any], message: str
) -> None:
    with pytest.raises(Invalid) as caught:
        json_patch(target, operations)
    assert caught.value.status == 422
    assert caught.value.diagnostics == message


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        ({"op": "add", "path": "/a", "value": 1}, "A JSON Patch must be an array of operations"),
        ('[{"op": "add", "path": "/a", "value": 1}]', "A JSON Patch must be an array of operations"),
        (["add"], "Operation 0: expected an object"),
        ([{"path": "/a"}], "Operation 0: Operation does not contain 'op' member"),
        ([{"op": "frobnicate", "path": "/a"}], "Operation 0: Unknown operation 'frobnicate'"),
        ([{"op": 1, "path": "/a"}], "Operation 0: Operation's op must be a string"),
        ([{"op": "remove"}], "Operation 0: Operation must have a 'path' member"),
        ([{"op": "remove", "path": 7}], "Operation 0: Invalid 'path'"),
        ([{"op": "add", "path": "/a"}], "Operation 0: The operation does not contain a 'value' member"),
        ([{"op": "test", "path": "/a"}], "Operation 0: The operation does not contain a 'value' member"),
        ([{"op": "move", "path": "/a"}], "Operation 0: The operation does not contain a 'from' member"),
        ([{"op": "copy", "from": 1, "path": "/a"}], "Operation 0: Invalid 'from'"),
        ([{"op": "remove", "path": "a"}], "Operation 0: 'path' is not a JSON Pointer: 'a'"),
        ([{"op": "remove", "path": "/a~2"}], "Operation 0: 'path' is not a JSON Pointer: '/a~2'"),
        ([{"op": "remove", "path": "/a~"}], "Operation 0: 'path' is not a JSON Pointer: '/a~'"),
        (
            [{"op": "test", "path": "/a", "value": 1}, {"op": "move", "from": "b", "path": "/a"}],
            "Operation 1: 'from' is not a JSON Pointer: 'b'",
        ),
    ],
)
def test_malformed_patch_documents_are_400(operations: object, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        json_patch({"a": 1}, operations)
    assert caught.value.status == 400
    assert caught.value.diagnostics == message


def test_json_pointer_escapes() -> None:
    # RFC 6901 §5: "/a~1b" is the member "a/b", "/m~0n" is "m~n".
    target = {"a/b": 1, "m~n": 2, "": 3}
    operations = [
        {"op": "remove", "path": "/a~1b"},
        {"op": "replace", "path": "/m~0n", "value": 4},
        {"op": "copy", "from": "/", "path": "/~01"},
    ]
    assert json_patch(target, operations) == {"m~n": 4, "": 3, "~1": 3}


def test_a_failed_operation_leaves_the_target_untouched() -> None:
    target = {"a": [1, 2], "b": {"c": 1}}
    with pytest.raises(Invalid):
        json_patch(
            target,
            [
                {"op": "remove", "path": "/a/0"},
                {"op": "add", "path": "/b/c", "value": 2},
                {"op": "test", "path": "/b/c", "value": 3},
            ],
        )
    assert target == {"a": [1, 2], "b": {"c": 1}}


def test_json_patch_results_share_nothing_with_the_inputs() -> None:
    target: dict[str, Any] = {"keep": {"list": [1]}}
    value: dict[str, Any] = {"nested": [1]}
    operations = [
        {"op": "add", "path": "/new", "value": value},
        {"op": "copy", "from": "/keep", "path": "/copy"},
    ]
    result = json_patch(target, operations)
    result["new"]["nested"].append(2)
    result["keep"]["list"].append(2)
    result["copy"]["list"].append(3)
    assert value == {"nested": [1]}
    assert target == {"keep": {"list": [1]}}
    assert result == {"keep": {"list": [1, 2]}, "new": {"nested": [1, 2]}, "copy": {"list": [1, 3]}}


def test_merge_patch_results_share_nothing_with_the_inputs() -> None:
    target: dict[str, Any] = {"keep": {"list": [1]}, "drop": 1}
    patch: dict[str, Any] = {"new": {"nested": [1]}, "drop": None}
    result = merge_patch(target, patch)
    result["new"]["nested"].append(2)
    result["keep"]["list"].append(2)
    assert patch == {"new": {"nested": [1]}, "drop": None}
    assert target == {"keep": {"list": [1]}, "drop": 1}
    assert result == {"keep": {"list": [1, 2]}, "new": {"nested": [1, 2]}}


_scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["a", "b", ""])
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)
    ),
    max_leaves=12,
)
_objects = st.dictionaries(st.sampled_from(["a", "b", "c"]), _json, max_size=4)
_pointers = st.lists(st.sampled_from(["a", "b", "0", "1", "-", "~0", "~1", "x~2"]), max_size=3).map(
    lambda parts: "".join("/" + part for part in parts)
)
_members = _pointers | st.integers(0, 1) | st.none()
_operations = st.lists(
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "nope"]),
            "path": _members,
        },
        optional={"value": _json, "from": _members},
    )
    | _scalars,
    max_size=4,
)


@settings(max_examples=300, database=None, deadline=None)
@given(target=_objects, operations=_operations)
def test_json_patch_only_ever_answers_with_a_result_400_or_422(
    target: dict[str, Any], operations: list[Any]
) -> None:
    before = copy.deepcopy(target)
    try:
        result = json_patch(target, operations)
    except (BadRequest, Invalid):
        pass
    else:
        assert isinstance(result, dict)
    assert same_json(target, before)


@settings(max_examples=300, database=None, deadline=None)
@given(target=_objects, patch=_objects)
def test_merge_patch_is_idempotent(target: dict[str, Any], patch: dict[str, Any]) -> None:
    # RFC 7396 §1: applying the same merge patch twice changes nothing more.
    once = merge_patch(target, patch)
    assert same_json(merge_patch(once, patch), once)
