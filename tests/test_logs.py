"""uvicorn's access lines with the values of secret-bearing query parameters masked."""

from __future__ import annotations

import logging

from fhirauth.logs import RedactedQueries


def _access_line(target: str) -> str:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", target, "1.1", 200),
        None,
    )
    assert RedactedQueries().filter(record) is True
    return record.getMessage()


def test_secret_query_values_are_masked_and_the_rest_is_kept() -> None:
    assert _access_line("/auth/signup/confirm/r-1?token=abc&next=%2Fx") == (
        '127.0.0.1:5 - "GET /auth/signup/confirm/r-1?token=***&next=%2Fx HTTP/1.1" 200'
    )
    assert _access_line("/User?password=hunter2&access%5Ftoken=t&client_secret=s&code=c&name=ann") == (
        '127.0.0.1:5 - "GET /User?password=***&access%5Ftoken=***&client_secret=***&code=***&name=ann HTTP/1.1" 200'
    )
    authorize = "/auth/authorize?response_type=code&client_id=app&state=st&code_challenge=E9Mel&scope=openid"
    assert _access_line(authorize) == f'127.0.0.1:5 - "GET {authorize} HTTP/1.1" 200'
    assert _access_line("/health") == '127.0.0.1:5 - "GET /health HTTP/1.1" 200'
