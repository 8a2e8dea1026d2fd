from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from support.mongo import secantus_server


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """A MongoDB server for the whole session: FHIRAUTH_TEST_MONGODB_URI, or a SecantusDB daemon."""
    configured = os.environ.get("FHIRAUTH_TEST_MONGODB_URI")
    if configured:
        yield configured
        return
    with secantus_server() as uri:
        yield uri
