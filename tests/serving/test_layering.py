"""The request edge (errors, limits, CORS, security headers) stands below every endpoint module: it
needs the app's Services, not a route table."""

from __future__ import annotations

import subprocess
import sys

# Every fhirauth.http module the edge loads that holds a route table (`routes`), i.e. an endpoint file.
LOADED_ENDPOINT_MODULES = """
import sys
import fhirauth.http.serving.edge
print(sorted(name for name, module in sys.modules.items()
             if name.startswith("fhirauth.http") and hasattr(module, "routes")))
"""


def test_the_request_edge_loads_no_endpoint_module() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED_ENDPOINT_MODULES], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
