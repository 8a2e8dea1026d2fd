"""`fhirauth serve` logs the same way in every worker: fhirauth's settings reach the processes uvicorn
starts, where the `fhirauth` command's own logging setup never ran."""

from __future__ import annotations

import json

import httpx2
import pytest
from support.server import REPO_ROOT, ROOT_CLIENT_SECRET, LiveServerFactory


def test_every_worker_writes_json_lines_at_the_configured_level(
    live_server_factory: LiveServerFactory,
) -> None:
    server = live_server_factory(workers=2, env={"FHIRAUTH_LOG_FORMAT": "json", "FHIRAUTH_LOG_LEVEL": "info"})
    for _ in range(4):
        refused = httpx2.post(
            f"{server.url}/auth/token", data={"grant_type": "client_credentials"}, auth=("nobody", "x")
        )
        assert refused.status_code == 401
    server.stop()
    audit = [
        json.loads(line)
        for line in server.output().splitlines()
        if line.startswith("{") and '"logger":"fhirauth.audit"' in line
    ]
    assert [(line["level"], line["audit_action"], line["audit_outcome"]) for line in audit] == [
        ("info", "token", "failure")
    ] * 4


DEMO_SEED = REPO_ROOT / "seed" / "demo.json"
FORGED = "2030-01-01 00:00:00,000 INFO fhirauth.audit: audit login success"
TOKEN = f"123456\r\n{FORGED}\x1b[31m\u2028\x85"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_token_sent_to_the_demo_receiver_is_logged_on_one_line(
    live_server_factory: LiveServerFactory, log_format: str
) -> None:
    server = live_server_factory(
        seed=[DEMO_SEED], env={"FHIRAUTH_DEMO": "true", "FHIRAUTH_LOG_FORMAT": log_format}
    )
    received = httpx2.post(
        f"{server.url}/demo/webhook/two-factor-confirmation",
        json={"user": {"email": "mallory@example.org"}, "token": TOKEN},
        auth=("root", ROOT_CLIENT_SECRET),
    )
    assert received.status_code == 200
    server.stop()
    lines = server.output().splitlines()
    [line] = [line for line in lines if "[demo SMS gateway]" in line]
    if log_format == "json":
        event = json.loads(line)
        assert (event["logger"], event["message"]) == (
            "fhirauth.demo",
            f"[demo SMS gateway] code for mallory@example.org: {TOKEN}",
        )
    else:
        assert line.endswith(
            rf" INFO fhirauth.demo: [demo SMS gateway] code for mallory@example.org: 123456\r\n{FORGED}"
            r"\x1b[31m\u2028\x85"
        )
    assert not [line for line in lines if line.startswith(FORGED)]


def test_a_forwarded_address_cannot_break_the_rate_limit_line(live_server_factory: LiveServerFactory) -> None:
    server = live_server_factory(
        env={"FHIRAUTH_TRUST_PROXY_HEADERS": "true", "FHIRAUTH_RATE_LIMIT_TOKEN_IP": "1/minute"}
    )
    # Bytes past 0x7f are valid in a header value (obs-text); 0x85 (NEL) is a line break to some readers.
    spoof = "2030-01-01 ERROR fhirauth: storage lost"
    statuses = [
        httpx2.post(
            f"{server.url}/auth/token",
            data={"grant_type": "client_credentials"},
            headers={"X-Forwarded-For": b"10.0.0.1\x85" + spoof.encode()},
        ).status_code
        for _ in range(2)
    ]
    assert statuses == [401, 429]
    server.stop()
    lines = server.output().splitlines()
    [line] = [line for line in lines if "rate limit" in line]
    assert f" WARNING fhirauth.limits: rate limit token-ip reached (client 10.0.0.1\\x85{spoof}); " in line
    assert not [line for line in lines if line.startswith(spoof)]
