"""Schemathesis against a live server on every backend: no 5xx, and every response as /openapi.json says
(documented status, content type, headers and body schema).

Bounded for CI (about 100 s for both backends on 2 cores): a fixed seed, up to FUZZ_EXAMPLES
generated cases per operation, and the coverage phase (boundary and malformed values for every
parameter and body field, about 1 s per operation) on the operations of COVERAGE_TAGS only. The other
resource types run the same endpoints with other schemas; Client's writes also hash a secret each,
which made its coverage phase alone take a minute on MongoDB. FHIRAUTH_FUZZ_EXAMPLES=30
FHIRAUTH_FUZZ_COVERAGE=all is the deep run (about 21,000 cases per backend, 6 minutes).

The schema describes search filters and patch paths only as strings, so the generator alone rarely
sends what once answered 500: fuzz_hooks.py adds those inputs as explicit examples of every search
and of the User patch (hundreds of parameters or sort keys, NUL and `$` names, keys nested past the
structural guard), about 90 requests a backend.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from support.server import ROOT_CLIENT_SECRET, LiveServer, LiveServerFactory, StorageFor

E2E_DIR = Path(__file__).resolve().parent
FUZZ_EXAMPLES = int(os.environ.get("FHIRAUTH_FUZZ_EXAMPLES", "8"))
FUZZ_SEED = os.environ.get("FHIRAUTH_FUZZ_SEED", "20261128")
FULL_COVERAGE = os.environ.get("FHIRAUTH_FUZZ_COVERAGE") == "all"
COVERAGE_TAGS = {"User", "Bundles", "OAuth", "Two-factor", "System"}
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]
_TIMEOUT_SECONDS = 900
USER_OPERATIONS = "^(twoFactor|userinfo|endSession)"

# Rate limits would answer most 2FA and token cases with 429 and leave the logic behind them unfuzzed
# (the limits have their own tests); the 429s stay documented.
NO_RATE_LIMITS = {
    "FHIRAUTH_RATE_LIMIT_TOKEN_IP": "off",
    "FHIRAUTH_RATE_LIMIT_LOGIN_ACCOUNT": "off",
    "FHIRAUTH_RATE_LIMIT_TWO_FACTOR_IP": "off",
}

CLIENT_SECRET = "fuzz-client-secret"
EMAIL, PASSWORD = "fuzz@example.com", "fuzz-user-password"


def _password_grant(client: httpx2.Client) -> str:
    response = client.post(
        "/auth/token",
        data={"grant_type": "password", "username": EMAIL, "password": PASSWORD},
        auth=("fuzz", CLIENT_SECRET),
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{value}"' for value in values) + "]"


def _config(server: LiveServer, tags: list[str]) -> str:
    """Root (HTTP Basic) for the resource API and client authentication; a user's bearer token for the
    user endpoints, and another one for DELETE /Session, which ends the session it is called with."""
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET), timeout=10.0) as client:
        # First-party, or the 2FA operations would answer every case 403 and leave their logic unfuzzed.
        fuzz_client = {
            "resourceType": "Client",
            "first_party": True,
            "secret": CLIENT_SECRET,
            "grant_types": ["password"],
        }
        assert client.put("/Client/fuzz", json=fuzz_client).status_code == 201
        fuzz_user = {"resourceType": "User", "email": EMAIL, "password": PASSWORD}
        assert client.put("/User/fuzz", json=fuzz_user).status_code == 201
        # The odd JSON Patches of fuzz_hooks.py aim at this one (a `data` object to add keys to).
        patch_target = {"resourceType": "User", "data": {"kept": True}}
        assert client.put("/User/fuzz-patch", json=patch_target).status_code == 201
        user_token, ending_token = _password_grant(client), _password_grant(client)
    uncovered = [] if FULL_COVERAGE else sorted(set(tags) - COVERAGE_TAGS)
    checks = "".join(f"{check}.enabled = true\n" for check in CHECKS)
    sections = [
        f"""hooks = "fuzz_hooks"
seed = {FUZZ_SEED}
workers = 2

[generation]
max-examples = {FUZZ_EXAMPLES}
database = "none"

[checks]
enabled = false
{checks}
[phases.stateful]
enabled = false

[auth.openapi.basicAuth]
username = "root"
password = "{ROOT_CLIENT_SECRET}"

[auth.openapi.bearerAuth]
bearer = "{user_token}"

[[operations]]
include-operation-id = "endSession"
headers = {{ Authorization = "Bearer {ending_token}" }}
""",
    ]
    if uncovered:
        sections.append(
            f"[[operations]]\ninclude-tag = {_toml_list(uncovered)}\nphases.coverage.enabled = false\n"
        )
    return "\n".join(sections)


def _summary(output: str) -> str:
    keep = re.compile(r"(Examples|Coverage|Fuzzing) \(in|passed|failed|generated|Selected|Tested|Seed:")
    return "\n".join(line.strip() for line in output.splitlines() if keep.search(line))


def _schemathesis(server: LiveServer, config: Path, selection: list[str]) -> tuple[int, str, float]:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--no-color",
        *selection,
    ]
    started = time.monotonic()
    run = subprocess.run(
        command,
        cwd=config.parent,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(E2E_DIR), os.environ.get("PYTHONPATH")])),
        },
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_SECONDS,
        check=False,
    )
    return run.returncode, f"{run.stdout}\n{run.stderr}", time.monotonic() - started


@pytest.mark.parametrize("backend", ["sqlite", "mongo"])
def test_fuzzing_finds_no_server_error_and_no_undocumented_response(
    backend: str, live_server_factory: LiveServerFactory, storage_for: StorageFor, tmp_path: Path
) -> None:
    server = live_server_factory(storage=storage_for(backend), env=NO_RATE_LIMITS)
    document = httpx2.get(f"{server.url}/openapi.json").json()
    operations = [op for item in document["paths"].values() for op in item.values()]
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(server, sorted({op["tags"][0] for op in operations})))
    tested = 0
    # The user's endpoints first: as root the fuzzer later deletes and rewrites whatever User it has
    # seen in a search, the fuzz user included, and its token dies with it.
    for selection in (
        ["--include-operation-id-regex", USER_OPERATIONS],
        ["--exclude-operation-id-regex", USER_OPERATIONS],
    ):
        status, output, elapsed = _schemathesis(server, config, selection)
        print(
            f"\nschemathesis on {backend} {selection}: exit {status} in {elapsed:.1f} s\n{_summary(output)}"
        )
        assert status == 0, f"{output}\n--- server ---\n{server.output()[-5000:]}"
        count = re.search(r"Tested: (\d+)", output)
        assert count is not None
        tested += int(count.group(1))
    assert tested == len(operations)
    assert "unhandled error" not in server.output()
