"""Access control: the root client may do everything; AccessPolicy resources decide for the rest.

The policies that apply to a caller are the global ones (no `link`) and those linked to its Client
or User; one of them allowing is enough (Aidbox's OR semantics). Each policy version is compiled
once; the set is read from storage at most every two seconds, and at once after a change made in
this process. A policy that cannot be compiled or evaluated denies and is logged: a broken policy
must never open access, nor turn a request into a 500.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator, ValidationError  # type: ignore[import-untyped]  # jsonschema ships no type information
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]  # jsonschema ships no type information
from jsonschema.validators import extend  # type: ignore[import-untyped]  # jsonschema ships no type information
from referencing import Registry
from referencing.exceptions import Unresolvable

from fhirauth.auth.authenticate import unauthenticated
from fhirauth.auth.matcho import MatchoError, compile_matcho
from fhirauth.auth.principal import Principal
from fhirauth.auth.smart.enforcement import ScopeEnforcement
from fhirauth.clock import Clock
from fhirauth.errors import Forbidden
from fhirauth.resources.schemas import _ecma_regex
from fhirauth.resources.service import ResourceService
from fhirauth.storage.base import Query

log = logging.getLogger("fhirauth.policy")

Document = dict[str, Any]
Rule = Callable[[Document], bool]

CACHE_SECONDS = 2.0
_PAGE = 500


class PolicyError(ValueError):
    """The policy cannot be evaluated."""


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# Draft 2020-12 with `pattern` read as ECMA-262 (as in the resource schemas): `$` is the very end.
_PolicySchemaValidator = extend(Draft202012Validator, validators={"pattern": _ecma_pattern})
# Where a policy's `$ref`s resolve: within the schema itself and the JSON Schema metaschemas. Without
# a registry of its own, jsonschema fetches any other URL a `$ref` names, at evaluation.
_NOTHING_FETCHED: Registry[Any] = Registry()


def _allow(policy: Mapping[str, Any]) -> Rule:
    return lambda request: True


def _json_schema(policy: Mapping[str, Any]) -> Rule:
    schema = policy.get("schema")
    if not isinstance(schema, dict | bool):
        raise PolicyError("a json-schema policy needs a `schema`")
    try:
        _PolicySchemaValidator.check_schema(schema)
    except SchemaError as error:
        raise PolicyError(f"invalid schema: {error.message}") from None
    validator = _PolicySchemaValidator(schema, registry=_NOTHING_FETCHED)
    return lambda request: bool(validator.is_valid(request))


def _matcho(policy: Mapping[str, Any]) -> Rule:
    pattern = policy.get("matcho")
    if not isinstance(pattern, dict):
        raise PolicyError("a matcho policy needs a `matcho` object")
    try:
        return compile_matcho(pattern)
    except MatchoError as error:
        raise PolicyError(f"invalid matcho: {error}") from None


def _sub_policies(policy: Mapping[str, Any], key: str) -> list[Rule]:
    items = policy.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise PolicyError(f"`{key}` must be an array of policies")
    return [compile_rule(item) for item in items]


def _complex(policy: Mapping[str, Any]) -> Rule:
    every, some = _sub_policies(policy, "and"), _sub_policies(policy, "or")
    if not every and not some:
        raise PolicyError("a complex policy needs `and` or `or`")
    # Both given: all of `and`, and one of `or`.
    return lambda request: (
        all(rule(request) for rule in every) and (not some or any(rule(request) for rule in some))
    )


_ENGINES: dict[str, Callable[[Mapping[str, Any]], Rule]] = {
    "allow": _allow,
    "json-schema": _json_schema,
    "matcho": _matcho,
    "complex": _complex,
}


def compile_rule(policy: Mapping[str, Any]) -> Rule:
    """The policy (or sub-policy) as a predicate over the request object; PolicyError if it is broken."""
    engine = policy.get("engine")
    compiler = _ENGINES.get(engine) if isinstance(engine, str) else None
    if compiler is None:
        raise PolicyError(f"unknown engine {engine!r}")
    return compiler(policy)


def _deny(request: Document) -> bool:
    return False


@dataclass(frozen=True)
class CompiledPolicy:
    id: str
    rule: Rule

    def allows(self, request: Document) -> bool:
        try:
            return self.rule(request)
        # What a schema or regex can still raise at evaluation: an unresolvable $ref, a pattern the
        # metaschema check let through, a self-referencing schema.
        except (re.error, Unresolvable, RecursionError) as error:
            log.error("AccessPolicy/%s cannot be evaluated and denies: %s", self.id, error)
            return False


def compile_policy(policy: Mapping[str, Any]) -> CompiledPolicy:
    policy_id = str(policy.get("id"))
    try:
        rule = compile_rule(policy)
    except PolicyError as error:
        log.error("AccessPolicy/%s is broken and denies: %s", policy_id, error)
        rule = _deny
    except RecursionError:
        log.error("AccessPolicy/%s is nested too deeply and denies", policy_id)
        rule = _deny
    return CompiledPolicy(policy_id, rule)


@dataclass
class PolicySet:
    everyone: list[CompiledPolicy] = field(default_factory=list)
    by_client: dict[str, list[CompiledPolicy]] = field(default_factory=dict)
    by_user: dict[str, list[CompiledPolicy]] = field(default_factory=dict)

    def add(self, policy: Mapping[str, Any], compiled: CompiledPolicy) -> None:
        links = policy.get("link")
        if not links:
            self.everyone.append(compiled)
            return
        # A link this code cannot read narrows the policy to nobody rather than widening it to all.
        for link in links if isinstance(links, list) else ():
            if not isinstance(link, dict) or not isinstance(link.get("id"), str):
                continue
            if link.get("resourceType") == "Client":
                self.by_client.setdefault(link["id"], []).append(compiled)
            elif link.get("resourceType") == "User":
                self.by_user.setdefault(link["id"], []).append(compiled)

    def applicable(self, principal: Principal | None) -> list[CompiledPolicy]:
        """Global policies first, then those linked to the caller's client and user, each once."""
        policies = list(self.everyone)
        if principal is None:
            return policies
        linked = self.by_client.get(principal.client_id or "", []) + self.by_user.get(
            principal.user_id or "", []
        )
        seen = {id(policy) for policy in policies}
        for policy in linked:
            if id(policy) not in seen:
                seen.add(id(policy))
                policies.append(policy)
        return policies


class AccessControl:
    def __init__(self, resources: ResourceService, clock: Clock) -> None:
        self._resources = resources
        self._clock = clock
        self._policies: PolicySet | None = None
        self._loaded_at: datetime | None = None
        self._generation = 0
        self._compiled: dict[tuple[str, str], CompiledPolicy] = {}
        self._lock = asyncio.Lock()
        resources.on_change("AccessPolicy", self._changed)

    async def _changed(self, before: Document | None, after: Document | None) -> None:
        self._generation += 1
        self._policies = None

    def _fresh(self) -> PolicySet | None:
        if self._policies is None or self._loaded_at is None:
            return None
        age = (self._clock() - self._loaded_at).total_seconds()
        return self._policies if 0 <= age < CACHE_SECONDS else None

    async def policies(self) -> PolicySet:
        cached = self._fresh()
        if cached is not None:
            return cached
        # One reader refreshes; requests arriving meanwhile wait for its result instead of reading too.
        async with self._lock:
            cached = self._fresh()
            if cached is not None:
                return cached
            generation, started = self._generation, self._clock()
            loaded = await self._load()
            if generation == self._generation:
                self._policies, self._loaded_at = loaded, started
            return loaded

    async def _load(self) -> PolicySet:
        documents: list[Document] = []
        offset = 0
        while True:
            page = await self._resources.storage.search(
                "AccessPolicy", Query(offset=offset, limit=_PAGE, count_total=False)
            )
            documents += page.items
            if len(page.items) < _PAGE:
                break
            offset += _PAGE
        policies = PolicySet()
        compiled: dict[tuple[str, str], CompiledPolicy] = {}
        for document in documents:
            key = (str(document.get("id")), str(document.get("meta", {}).get("versionId")))
            compiled[key] = self._compiled.get(key) or compile_policy(document)
            policies.add(document, compiled[key])
        self._compiled = compiled
        return policies

    @staticmethod
    def unrestricted(principal: Principal | None) -> bool:
        """The root client may do everything, whatever the policies say."""
        return principal is not None and principal.is_root

    @staticmethod
    def administrator(principal: Principal | None) -> bool:
        """Whether the caller acts as the administrator: the root client, its token not bound by SMART
        scopes. Only the administrator writes the server-managed fields and has a Bundle's entries
        run unchecked; a root token with resource scopes has what they allow, like any other token."""
        return AccessControl.unrestricted(principal) and not ScopeEnforcement.restricts(principal)

    async def allows(self, principal: Principal | None, request: Document) -> bool:
        if self.unrestricted(principal):
            return True
        policies = await self.policies()
        return any(policy.allows(request) for policy in policies.applicable(principal))

    async def authorize(self, principal: Principal | None, request: Document) -> None:
        """Return when the request is allowed; raise 401 (anonymous) or 403 (known caller) otherwise."""
        if await self.allows(principal, request):
            return
        if principal is None:
            raise unauthenticated("Authentication required")
        raise Forbidden("Access denied")
