"""An outsider's attacks on the access rules: Bundle entries, `$` property names, the server-managed
User.twoFactor, failed client authentication and the console e-mail provider.

Each test names the attack in its docstring. A test marked xfail proves a hole that is still open (the
mark goes with the fix); the unmarked ones are attacks the server refuses, kept as regression guards.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.clock import ManualClock
from fhirauth.notify import NotificationFailed
from fhirauth.twofactor import totp
from fhirauth.twofactor.guard import Reason
from tests.api.conftest import NO_AUTH, ROOT, settings_for
from tests.api.pages_support import call, services
from tests.api.test_pages_notify import Mailbox, smtp_server  # noqa: F401 - a fixture
from tests.api.test_policy_access import API, put_policy, setup_clients, setup_users

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
API_LINK = [{"resourceType": "Client", "id": "api"}]
NURSE = {"resourceType": "User", "data": {"role": "nurse"}}
BOSS = {"resourceType": "User", "email": "boss@example.org", "data": {"role": "admin", "salary": 250000}}
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _stored(api: TestClient, resource_type: str, id: str) -> dict[str, Any] | None:
    """The live stored document, read past the API (None when absent or deleted)."""
    stored = call(api, services(api).storage.get, resource_type, id)
    if stored is None or stored.deleted:
        return None
    document: dict[str, Any] = stored.document
    return document


def _user_ids(api: TestClient) -> list[str]:
    return sorted(entry["resource"]["id"] for entry in api.get("/User").json().get("entry", []))


# 1. Bundle entries are authorized as the requests they describe


def _api_may_create_nurses(api: TestClient, **narrower: Any) -> None:
    """The `api` client may post Bundles and create nurse Users (`narrower`: more of the pattern)."""
    setup_clients(api)
    put_policy(api, "bundles", engine="matcho", matcho={"request-method": "post", "uri": "/"}, link=API_LINK)
    pattern = {"request-method": "post", "uri": "/User", "body": {"data": {"role": "nurse"}}, **narrower}
    put_policy(api, "nurses", engine="matcho", matcho=pattern, link=API_LINK)
    assert api.put("/User/boss", json=BOSS).status_code == 201


def test_an_entrys_if_none_exist_is_judged_as_the_header_sent_alone(api: TestClient) -> None:
    """Attack: the policy lets the client create nurses but no conditional create (no query, no
    If-None-Exist header). Sent alone, the conditional create is refused; as a transaction entry its
    `ifNoneExist` is invisible to the policy, and the answer is the boss's record."""
    _api_may_create_nurses(api, **{"query-string": "", "headers": {"if-none-exist": "nil?"}})
    alone = api.post("/User", json=NURSE, headers={**API, "If-None-Exist": "email=boss@example.org"})
    assert alone.status_code == 403
    entry = {
        "request": {"method": "POST", "url": "User", "ifNoneExist": "email=boss@example.org"},
        "resource": NURSE,
    }
    res = api.post("/", json=_bundle("transaction", entry), headers=API)
    assert "250000" not in res.text
    assert res.status_code == 403, res.text
    assert res.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert _user_ids(api) == ["boss"]


CONDITIONAL_CREATES = {
    "if-none-exist header": ("single", {"If-None-Exist": "email=boss@example.org"}, "/User"),
    "query": ("single", {}, "/User?email=boss@example.org"),
    "transaction ifNoneExist": ("transaction", {"ifNoneExist": "email=boss@example.org"}, "User"),
    "batch url query": ("batch", {}, "User?email=boss@example.org"),
}


@pytest.mark.parametrize("how", sorted(CONDITIONAL_CREATES))
def test_a_conditional_create_does_not_hand_out_a_record_the_caller_may_not_read(
    api: TestClient, how: str
) -> None:
    """Attack: a client allowed only to create nurse Users sends a conditional create whose condition
    matches another user. The match is answered 200 with the whole matched User (e-mail, roles,
    data), found by any search the caller likes: create permission becomes search-and-read on Users."""
    _api_may_create_nurses(api)
    kind, extra, url = CONDITIONAL_CREATES[how]
    assert api.get("/User/boss", headers=API).status_code == 403
    if kind == "single":
        res = api.post(url, json=NURSE, headers={**API, **extra})
        answer = res.text
    else:
        entry = {"request": {"method": "POST", "url": url, **extra}, "resource": NURSE}
        res = api.post("/", json=_bundle(kind, entry), headers=API)
        answer = res.text
    assert "boss@example.org" not in answer and "250000" not in answer
    assert _user_ids(api) == ["boss"]


@pytest.mark.parametrize("kind", ["single", "batch"])
def test_a_put_whose_body_names_another_id_is_400(api: TestClient, kind: str) -> None:
    """Attack: the policy judges a PUT by the id its body names (`body.id` is the caller's own); the
    body says `ann`, the url says `bob`. The server writes bob's record with ann's body instead of
    answering 400 as FHIR's update asks when the ids disagree, so what the policy saw is not what
    was written."""
    ann, _ = setup_users(api)
    put_policy(api, "bundles", engine="matcho", matcho={"request-method": "post", "uri": "/"})
    put_policy(api, "own-body", engine="matcho", matcho={"request-method": "put", "body": {"id": ".user.id"}})
    bob = _stored(api, "User", "bob")
    mine = {"resourceType": "User", "id": "ann", "email": "mallory@example.org", "password": "pwned-pwned"}
    refusal = "The body's id does not match 'bob' in the url"
    if kind == "single":
        res = api.put("/User/bob", json=mine, headers=ann)
        status, outcome = res.status_code, res.json()
    else:
        entry = {"request": {"method": "PUT", "url": "User/bob"}, "resource": mine}
        [answered] = api.post("/", json=_bundle("batch", entry), headers=ann).json()["entry"]
        status, outcome = int(answered["response"]["status"]), answered["response"]["outcome"]
        refusal = f"Bundle.entry[0]: {refusal}"
    assert _stored(api, "User", "bob") == bob
    assert status == 400
    assert [(issue["diagnostics"], issue["expression"]) for issue in outcome["issue"]] == [
        (refusal, ["User.id"])
    ]


ENTRY_URLS = [
    "/User/ann/../bob",
    "User/ann/../../User/bob",
    "http://evil.example/User/bob",
    "//User/bob",
    "User%2Fbob",
    "/User/bob/",
    "User//bob",
    "user/bob",
    "/User/bob?_id=ann",
    "/User/bob#/User/ann",
]


def test_entry_urls_are_judged_as_the_resource_they_write(api: TestClient) -> None:
    """Attack: Ann may PUT her own User only. Entry urls that dress up bob's record as hers (dot
    segments, absolute and network-path urls, encoded slashes, doubled and trailing slashes, another
    case, a query or fragment naming her) are each refused, and bob's record is untouched."""
    ann, _ = setup_users(api)
    put_policy(api, "bundles", engine="matcho", matcho={"request-method": "post", "uri": "/"})
    put_policy(
        api,
        "own-user",
        engine="matcho",
        matcho={"request-method": "put", "uri": "#^/User/[^/]+$", "params": {"id": ".user.id"}},
    )
    bob = _stored(api, "User", "bob")
    mine = {"resourceType": "User", "id": "ann", "email": "mallory@example.org", "password": "pwned-pwned"}
    entries = [{"request": {"method": "PUT", "url": url}, "resource": mine} for url in ENTRY_URLS]
    res = api.post("/", json=_bundle("batch", *entries), headers=ann)
    assert res.status_code == 200
    statuses = [entry["response"]["status"] for entry in res.json()["entry"]]
    assert statuses == ["400", "400", "403", "400", "400", "403", "403", "403", "403", "403"]
    assert _stored(api, "User", "bob") == bob
    # The same entries in a transaction: refused whole, at the first entry the policy refuses.
    res = api.post("/", json=_bundle("transaction", *entries[2:3], *entries[5:]), headers=ann)
    assert res.status_code == 403
    assert res.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert _stored(api, "User", "bob") == bob
    assert "mallory" not in str(_stored(api, "User", "ann"))


# 2. `$` property names only where a matcho pattern or a JSON Schema stands in an AccessPolicy


SMUGGLED_DOLLARS = {
    "move the pattern into description": [{"op": "move", "from": "/matcho", "path": "/description"}],
    "copy the pattern into a link": [{"op": "copy", "from": "/matcho", "path": "/link/0"}],
    "copy the operator to the top": [{"op": "copy", "from": "/matcho/uri", "path": "/extra"}],
    "add an operator to a link": [{"op": "add", "path": "/link/0/$enum", "value": ["x"]}],
}


@pytest.mark.parametrize("how", sorted(SMUGGLED_DOLLARS))
def test_a_patch_cannot_carry_an_operator_out_of_a_matcho_pattern(api: TestClient, how: str) -> None:
    """Attack: JSON Patch move/copy of an AccessPolicy's matcho subtree (whose `$enum` is allowed
    there) to a place where `$` names are not. 400, nothing stored, on both backends."""
    put_policy(
        api,
        "p",
        engine="matcho",
        matcho={"uri": {"$enum": ["/User"]}},
        link=[{"resourceType": "Client", "id": "api"}],
    )
    before = _stored(api, "AccessPolicy", "p")
    res = api.patch("/AccessPolicy/p", json=SMUGGLED_DOLLARS[how], headers=JSON_PATCH)
    assert res.status_code == 400, res.text
    assert res.json()["issue"][0]["diagnostics"] == "Property names must not start with '$'"
    assert _stored(api, "AccessPolicy", "p") == before


def test_dollar_names_reach_no_other_resource_by_any_body(api: TestClient) -> None:
    """Attack: `$` names in a User through YAML, through a Bundle entry whose url says AccessPolicy but
    whose resource is a User, and through a PATCH entry; each 400, and no User is written."""
    yaml = "resourceType: User\nemail: eve@example.org\ndata:\n  $where: sleep(1000)\n"
    res = api.put("/User/eve", content=yaml, headers={"Content-Type": "text/yaml"})
    assert (res.status_code, res.json()["issue"][0]["expression"]) == (400, ["data.$where"])
    disguised = {
        "request": {"method": "PUT", "url": "AccessPolicy/eve"},
        "resource": {"resourceType": "User", "data": {"$gt": ""}},
    }
    patched = {
        "request": {"method": "PATCH", "url": "User/ann"},
        "resource": [{"op": "add", "path": "/data", "value": {"$ne": None}}],
    }
    api.put("/User/ann", json={"resourceType": "User", "email": "ann@example.org"})
    for entry in (disguised, patched):
        res = api.post("/", json=_bundle("transaction", entry))
        assert res.status_code == 400, res.text
        assert res.json()["issue"][0]["diagnostics"] == (
            "Bundle.entry[0]: Property names must not start with '$'"
        )
    assert _stored(api, "User", "eve") is None
    assert "data" not in (_stored(api, "User", "ann") or {})
    assert api.get("/AccessPolicy/eve").status_code == 404


# 3. User.twoFactor is server-managed


@pytest.fixture
def ann(api: TestClient) -> dict[str, str]:
    """Ann's bearer token, her 2FA on (imported by the administrator); she may do anything to her own
    User (PUT, PATCH, DELETE) and post Bundles."""
    ann, _ = setup_users(api)
    body = {
        "resourceType": "User",
        "email": "ann@example.org",
        "password": "correct horse",
        "twoFactor": {"enabled": True, "secretKey": SECRET},
    }
    assert api.put("/User/ann", json=body).status_code == 200
    put_policy(
        api, "self-service", engine="matcho", matcho={"uri": "#^/User/[^/]+$", "params": {"id": ".user.id"}}
    )
    put_policy(api, "bundles", engine="matcho", matcho={"request-method": "post", "uri": "/"})
    return ann


def _signs_in_without_a_code(api: TestClient) -> bool:
    form = {"grant_type": "password", "client_id": "spa", "username": "ann@example.org"}
    res = api.post("/auth/token", data={**form, "password": "correct horse"}, headers=NO_AUTH)
    return res.status_code == 200


SIDE_DOORS: dict[str, tuple[str, str, Any, dict[str, str]]] = {
    "json patch move out": (
        "PATCH",
        "/User/ann",
        [{"op": "move", "from": "/twoFactor", "path": "/data"}],
        {},
    ),
    "json patch copy in": (
        "PATCH",
        "/User/ann",
        [
            {"op": "add", "path": "/data", "value": {"enabled": False}},
            {"op": "copy", "from": "/data", "path": "/twoFactor"},
        ],
        {},
    ),
    "collection upsert": (
        "POST",
        "/",
        _bundle(
            "collection",
            {"resource": {"resourceType": "User", "id": "ann", "twoFactor": {"enabled": False}}},
        ),
        {},
    ),
    "yaml put": (
        "PUT",
        "/User/ann",
        "resourceType: User\nemail: ann@example.org\ntwoFactor:\n  enabled: false\n",
        {"Content-Type": "text/yaml"},
    ),
}


@pytest.mark.parametrize("door", sorted(SIDE_DOORS))
def test_two_factor_cannot_be_moved_copied_or_upserted_away(
    api: TestClient, ann: dict[str, str], door: str
) -> None:
    """Attack: Ann, signed in with her second factor, tries to switch it off by the side doors: a
    JSON Patch moving it away or copying a made-up one over it, a collection entry's upsert, a YAML
    body. Each is refused and her second factor still guards her sign-in."""
    before = _stored(api, "User", "ann")
    method, url, body, headers = SIDE_DOORS[door]
    if isinstance(body, str):
        res = api.request(method, url, content=body, headers={**ann, **headers})
    else:
        patch_headers = JSON_PATCH if method == "PATCH" else {}
        res = api.request(method, url, json=body, headers={**ann, **patch_headers, **headers})
    if url == "/":
        assert res.status_code == 200
        [entry] = res.json()["entry"]
        assert entry["response"]["status"] == "403"
    else:
        assert res.status_code == 403, res.text
    assert res.text.count("User.twoFactor is managed by the two-factor flows") == 1
    assert _stored(api, "User", "ann") == before
    assert not _signs_in_without_a_code(api)


def test_a_field_named_like_two_factor_is_only_data(api: TestClient, ann: dict[str, str]) -> None:
    """Attack: `twofactor` (another case) and `twoFactor/enabled` (a JSON Patch path escaping `/`) are
    other property names: storing them changes nothing about the second factor."""
    res = api.put(
        "/User/ann",
        json={"resourceType": "User", "email": "ann@example.org", "twofactor": {"enabled": False}},
        headers=ann,
    )
    assert res.status_code == 200
    res = api.patch(
        "/User/ann",
        json=[{"op": "add", "path": "/twoFactor~1enabled", "value": False}],
        headers={**ann, **JSON_PATCH},
    )
    assert res.status_code == 200
    stored = _stored(api, "User", "ann")
    assert stored is not None and stored["twoFactor"]["enabled"] is True
    assert not _signs_in_without_a_code(api)


def test_deleting_and_recreating_her_user_does_not_drop_her_second_factor(
    api: TestClient, ann: dict[str, str]
) -> None:
    """Attack: Ann's self-service policy lets her delete her own User (unusual, but a policy an
    administrator may write as "users manage their own record"). One transaction deletes her User and
    PUTs it back without `twoFactor`: the create over the tombstone keeps nothing, so her second
    factor is gone while her token, issued before, keeps working."""
    entries = [
        {"request": {"method": "DELETE", "url": "User/ann"}},
        {
            "request": {"method": "PUT", "url": "User/ann"},
            "resource": {"resourceType": "User", "email": "ann@example.org", "password": "correct horse"},
        },
    ]
    api.post("/", json=_bundle("transaction", *entries), headers=ann)
    stored = _stored(api, "User", "ann")
    assert stored is None or (stored.get("twoFactor") or {}).get("enabled") is True
    assert not _signs_in_without_a_code(api)


def test_a_deleted_users_tokens_do_not_come_back_with_her_id(api: TestClient) -> None:
    """Attack: Ann's token (say stolen) stops working when the administrator deletes her User. When a
    User with the same id is created later (an import from a directory that keeps ids), the old
    token, and its refresh token, are accepted again, for the new account."""
    setup_users(api)
    spa = {
        "resourceType": "Client",
        "grant_types": ["password"],
        "auth": {"password": {"refresh_token": True}},
    }
    assert api.put("/Client/spa", json=spa).status_code == 200
    put_policy(
        api, "own-user", engine="matcho", matcho={"request-method": "get", "params": {"id": ".user.id"}}
    )
    form = {"grant_type": "password", "client_id": "spa", "username": "ann@example.org"}
    tokens = api.post("/auth/token", data={**form, "password": "correct horse"}, headers=NO_AUTH).json()
    stolen = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert api.get("/User/ann", headers=stolen).status_code == 200
    assert api.delete("/User/ann").status_code == 200
    assert api.get("/User/ann", headers=stolen).status_code == 401
    again = {"resourceType": "User", "email": "ann.new@example.org", "password": "another horse"}
    assert api.put("/User/ann", json=again).status_code == 201
    assert api.get("/User/ann", headers=stolen).status_code == 401
    refresh = {"grant_type": "refresh_token", "client_id": "spa", "refresh_token": tokens["refresh_token"]}
    assert api.post("/auth/token", data=refresh, headers=NO_AUTH).status_code == 400


# 8. Failed client authentication is limited per address


LIMITS = {
    "trust_proxy_headers": True,
    "rate_limit_client_auth_ip": "3/minute",
    "rate_limit_client_auth_client": "3/minute",
    "rate_limit_token_ip": "off",
}


@pytest.fixture
def limited(storage_url: str, clock: ManualClock) -> Iterator[TestClient]:
    app = create_app(settings_for(storage_url, **LIMITS), clock=clock)
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as client:
        yield client


def _basic(client_id: str, secret: str, address: str) -> dict[str, str]:
    token = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}", "X-Forwarded-For": address}


def test_guesses_of_the_root_client_secret_count_against_the_address(limited: TestClient) -> None:
    """Attack: guess the root client's secret (the administrator) by HTTP Basic on the REST API or the
    token endpoint. Its check costs no hashing, so the failure limits skip it: every guess is
    answered 401, never 429, however many an address sends."""
    attacker = "203.0.113.66"
    for guess in ("123456", "password", "root"):
        assert limited.get("/User", headers=_basic("root", guess, attacker)).status_code == 401
    res = limited.get("/User", headers=_basic("root", "secret0", attacker))
    assert res.status_code == 429, res.text
    form = {"grant_type": "client_credentials"}
    assert (
        limited.post("/auth/token", data=form, headers=_basic("root", "admin", attacker)).status_code == 429
    )
    # The administrator, elsewhere, is not locked out.
    assert limited.get("/User", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 200


# 7. Logs and e-mail: a User's e-mail address carrying control characters


@pytest.fixture
def sqlite_api(clock: ManualClock) -> Iterator[TestClient]:
    app = create_app(settings_for("sqlite://:memory:"), clock=clock)
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as client:
        yield client


FORGED = "\r\n2030-01-01 00:00:00,000 INFO fhirauth.audit: audit login success\r\n\x1b[2J"
NOTICE = ("Your recovery codes were replaced", "New two-factor recovery codes were made for your account.")


def _refused_address(api: TestClient, email: str) -> None:
    """A User with `email` is refused at the door: 422 naming User.email, nothing stored."""
    res = api.put("/User/eve", json={"resourceType": "User", "email": email, "password": "pw"})
    assert res.status_code == 422, res.text
    assert res.json()["issue"][0]["expression"] == ["User.email"]
    assert _stored(api, "User", "eve") is None


def _regenerate_recovery_codes(api: TestClient, clock: ManualClock, email: str) -> Any:
    """Eve (with `email`) turns 2FA on through a first-party client, then asks for new recovery codes,
    which tells her by e-mail; the answer to that request."""
    client = {"resourceType": "Client", "first_party": True, "secret": "s", "grant_types": ["password"]}
    assert api.put("/Client/app", json=client).status_code == 201
    assert (
        api.put("/User/eve", json={"resourceType": "User", "email": email, "password": "pw"}).status_code
        == 201
    )
    form = {"grant_type": "password", "client_id": "app", "client_secret": "s", "password": "pw"}
    token = api.post("/auth/token", data={**form, "username": email}, headers=NO_AUTH)
    auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
    uri = api.post("/app/auth/two-factor/request", json={}, headers=auth).json()["uri"]
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    code = totp.code_at(secret, totp.step_at(clock().timestamp()))
    assert api.post("/app/auth/two-factor/confirm", json={"token": code}, headers=auth).status_code == 200
    clock.advance(30)
    code = totp.code_at(secret, totp.step_at(clock().timestamp()))
    return api.post("/app/auth/two-factor/recovery-codes", json={"token": code}, headers=auth)


def test_the_console_email_provider_writes_no_control_characters(
    sqlite_api: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Attack: a User's e-mail carries CR/LF and a terminal escape. The second-factor notices go to it;
    with the console provider (the default with no AidboxConfig) the address is written to the
    server's stdout, where raw it would forge lines (and drive the operator's terminal). Refused twice:
    no User write takes such an address, and one stored before that rule is printed escaped."""
    _refused_address(sqlite_api, f"eve@example.org{FORGED}")
    call(sqlite_api, services(sqlite_api).notifier.send, f"eve@example.org{FORGED}", *NOTICE)
    printed = capsys.readouterr().out
    assert "To: eve@example.org" in printed
    assert "\r" not in printed and "\x1b" not in printed
    assert not any(line.startswith("2030-01-01") for line in printed.splitlines())


def _smtp_provider(api: TestClient, port: int) -> None:
    provider = {"default": "mail", "mail": {"type": "smtp", "host": "127.0.0.1", "port": port}}
    config = {"resourceType": "AidboxConfig", "provider": provider}
    assert api.put("/AidboxConfig/provider", json=config).status_code in (200, 201)


def test_an_address_smtp_cannot_carry_does_not_turn_a_done_change_into_a_500(
    sqlite_api: TestClient,
    clock: ManualClock,
    smtp_server: tuple[int, Mailbox],  # noqa: F811 - the fixture imported above
) -> None:
    """Attack: the same address with the SMTP provider. Python's e-mail library refuses a header with
    CR/LF (no header injection), but its ValueError was not the failure the notifier catches: the
    request that had already replaced the recovery codes answered 500, and the new codes were never
    shown (the old ones no longer work). Now no User write takes such an address; one stored before
    is a failed notice (NotificationFailed, nothing sent); and a 2FA change whose notice fails, for
    any reason (here an SMTP server that is down), is still answered with its result."""
    port, mailbox = smtp_server
    _smtp_provider(sqlite_api, port)
    crlf = "eve@example.org\r\nBcc: mallory@example.org"
    _refused_address(sqlite_api, crlf)
    with pytest.raises(NotificationFailed):
        call(sqlite_api, services(sqlite_api).notifier.send, crlf, *NOTICE)
    assert mailbox.envelopes == []

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    _smtp_provider(sqlite_api, closed_port)
    res = _regenerate_recovery_codes(sqlite_api, clock, "eve@example.org")
    assert res.status_code == 200, res.text
    codes = res.json()["recoveryCodes"]
    assert len(codes) == 10
    assert (
        call(sqlite_api, services(sqlite_api).twofactor.verify, "eve", codes[0])
    ).reason is Reason.ACCEPTED
