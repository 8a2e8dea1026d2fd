"""Helpers for the HTML page tests: CSRF fields, cookies, users, and the app's own services."""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx2
from starlette.testclient import TestClient

from fhirauth.services import Services

T = TypeVar("T")

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'<input type="hidden" name="csrf" value="([0-9a-f]{64})">')
_ALERT = re.compile(r'<p class="message message-error" role="alert">(.*?)</p>', re.S)
_FORM_ACTION = re.compile(r'<form method="post" action="([^"]*)"')


def services(client: TestClient) -> Services:
    result: Services = client.app.state.services  # type: ignore[attr-defined]
    return result


def call(client: TestClient, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run one of the app's async services on the app's own event loop."""
    assert client.portal is not None
    return client.portal.call(fn, *args)


def csrf_from(page: httpx2.Response) -> str:
    match = _CSRF.search(page.text)
    assert match, f"no CSRF field in:\n{page.text}"
    return match.group(1)


def form_action(page: httpx2.Response) -> str:
    match = _FORM_ACTION.search(page.text)
    assert match, f"no form in:\n{page.text}"
    return html.unescape(match.group(1))


def alert(page: httpx2.Response) -> str | None:
    match = _ALERT.search(page.text)
    return html.unescape(match.group(1)).strip() if match else None


def set_cookies(response: httpx2.Response) -> dict[str, str]:
    """Set-Cookie headers of one response by cookie name (the whole header line as value)."""
    found: dict[str, str] = {}
    for line in response.headers.get_list("set-cookie"):
        found[line.split("=", 1)[0]] = line
    return found


def cookie_attributes(line: str) -> tuple[str, dict[str, str]]:
    """(value, {attribute (lower case): value}) of one Set-Cookie line."""
    first, *rest = [part.strip() for part in line.split(";")]
    value = first.split("=", 1)[1].strip('"')
    attributes = {}
    for part in rest:
        name, _, attr_value = part.partition("=")
        attributes[name.lower()] = attr_value
    return value, attributes


def create_user(client: TestClient, id: str, **fields: Any) -> dict[str, Any]:
    body = {"resourceType": "User", "email": f"{id}@example.org", "password": PASSWORD, **fields}
    response = client.put(f"/User/{id}", json=body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


def login(client: TestClient, username: str, password: str = PASSWORD, *, query: str = "") -> httpx2.Response:
    path = f"/auth/login?{query}" if query else "/auth/login"
    token = csrf_from(client.get(path))
    return client.post(
        path,
        data={"csrf": token, "username": username, "password": password},
        follow_redirects=False,
    )


def audit_events(client: TestClient, action: str) -> list[dict[str, Any]]:
    bundle = client.get("/AuditEvent", params={"action": action, "_sort": "recorded"}).json()
    return [entry["resource"] for entry in bundle["entry"]]


def audit_detail(event: dict[str, Any]) -> dict[str, str]:
    return {item["type"]: item["valueString"] for item in event.get("entity", [{}])[0].get("detail", [])}
