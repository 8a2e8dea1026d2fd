"""The lint rule that keeps Starlette's and uvicorn's internals inside fhirauth/http/serving/: a
private import or a private attribute anywhere else fails `ruff check`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).with_name("ruff")
CHECKED = {"TID251", "SLF001"}

VIOLATIONS = [
    ("from starlette._utils import get_route_path\n", "TID251"),
    ("from starlette import _utils\n", "TID251"),
    ("import starlette._exception_handler\n", "TID251"),
    ("from uvicorn.protocols.http.httptools_impl import STATUS_LINE\n", "TID251"),
    ("from uvicorn.server import ServerState\n", "TID251"),
    ("from uvicorn.lifespan.on import LifespanOn\n", "TID251"),
    ("def keep(request: object) -> None:\n    request._body = b''\n", "SLF001"),
]


def violations(source: str, path: str) -> list[str]:
    """The codes of CHECKED that `ruff check` with the project's settings reports in `source` at `path`."""
    result = subprocess.run(
        [str(RUFF), "check", "--no-cache", "--output-format", "json", "--stdin-filename", path, "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return [found["code"] for found in json.loads(result.stdout) if found["code"] in CHECKED]


@pytest.mark.parametrize(("source", "code"), VIOLATIONS)
def test_a_framework_internal_outside_the_serving_package_fails_the_lint(source: str, code: str) -> None:
    assert violations(source, "fhirauth/http/rest.py") == [code]
    assert violations(source, "fhirauth/auth/tokens.py") == [code]
    assert violations(source, "tests/api/test_crud.py") == ([code] if code == "TID251" else [])


@pytest.mark.parametrize(("source", "code"), VIOLATIONS)
def test_the_serving_package_may_use_them(source: str, code: str) -> None:
    assert violations(source, "fhirauth/http/serving/protocol.py") == []


def test_the_public_api_passes() -> None:
    public = "from starlette.routing import Route, Router\nfrom uvicorn import Config, Server\n"
    assert violations(public, "fhirauth/http/rest.py") == []
