"""`fhirauth serve` refuses to start in production with the demo asked for, before it serves anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.server import LiveServer, ServerError


def test_serve_in_production_with_the_demo_exits_at_start_up(tmp_path: Path) -> None:
    server = LiveServer(workdir=tmp_path, env={"FHIRAUTH_ENV": "production", "FHIRAUTH_DEMO": "true"})
    with pytest.raises(ServerError, match="the server exited with status 3"):
        server.start()
    assert (
        "SystemExit: fhirauth: FHIRAUTH_DEMO must not be set with FHIRAUTH_ENV=production "
        "(the demo's webhook receiver logs two-factor codes)"
    ) in server.output()
    assert "Application startup failed. Exiting." in server.output()
