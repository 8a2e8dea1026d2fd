"""`fhirauth serve` logs the same way in every worker: fhirauth's settings reach the processes uvicorn
starts, where the `fhirauth` command's own logging setup never ran."""

from __future__ import annotations

import json

import httpx2
from support.server import LiveServerFactory


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
