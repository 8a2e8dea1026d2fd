"""Nothing a client sends can forge a log line: the text formats escape control characters in every
message and argument, tracebacks are indented under their line, and JSON lines stay one line each."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from types import TracebackType

from fhirauth.logs import JsonFormatter, TextFormatter, UvicornAccessFormatter, UvicornFormatter

# C0 (CR, LF, ESC, TAB, NUL, the separators Python's splitlines also breaks on), DEL, C1 (NEL, CSI),
# and the Unicode line and paragraph separators.
CONTROLS = "\r\n\x1b[31m\t\x00\x0b\x0c\x1c\x1d\x1e\x7f\x85\x9b\u2028\u2029"
ESCAPED = r"\r\n\x1b[31m\t\x00\x0b\x0c\x1c\x1d\x1e\x7f\x85\x9b\u2028\u2029"
CONTROL_CHARACTERS = {c for c in CONTROLS if not c.isprintable()}
FORGED = "\r\n2030-01-01 00:00:00,000 INFO fhirauth.audit: audit login success"
ExcInfo = tuple[type[BaseException], BaseException, TracebackType]


def record(msg: str, *args: object, exc_info: ExcInfo | None = None) -> logging.LogRecord:
    return logging.LogRecord("fhirauth.http", logging.WARNING, __file__, 1, msg, args, exc_info)


def raised(message: str) -> ExcInfo:
    try:
        raise ValueError(message)
    except ValueError as error:
        assert error.__traceback__ is not None
        return ValueError, error, error.__traceback__


def test_text_escapes_control_characters_in_the_message_and_its_arguments() -> None:
    formatter = TextFormatter("%(levelname)s %(name)s: %(message)s")
    line = formatter.format(record("client %s sent %s" + CONTROLS, f"a{CONTROLS}b", ValueError(FORGED)))
    assert line == (
        f"WARNING fhirauth.http: client a{ESCAPED}b sent "
        r"\r\n2030-01-01 00:00:00,000 INFO fhirauth.audit: audit login success" + ESCAPED
    )
    assert line.splitlines() == [line]


def test_text_leaves_printable_text_as_it_is() -> None:
    formatter = TextFormatter("%(message)s")
    assert (
        formatter.format(record("%s", "Zoë 中文 \\n a\\x1b backslash, ¡hola!"))
        == "Zoë 中文 \\n a\\x1b backslash, ¡hola!"
    )


def test_a_traceback_is_indented_under_its_line_and_escaped() -> None:
    formatter = TextFormatter("%(levelname)s %(name)s: %(message)s")
    text = formatter.format(record("unhandled error on %s", "/x", exc_info=raised(f"bad{FORGED}\x1b[2K")))
    first, *rest = text.split("\n")
    assert first == "WARNING fhirauth.http: unhandled error on /x"
    assert rest[0] == "  Traceback (most recent call last):"
    assert rest[-2:] == [
        "  ValueError: bad\\r",
        "  2030-01-01 00:00:00,000 INFO fhirauth.audit: audit login success\\x1b[2K",
    ]
    # Every line of a record but its first starts with a space: none can pass for a record.
    assert all(line.startswith("  ") for line in rest)
    assert text.splitlines() == text.split("\n")


def test_json_is_one_line_whatever_the_values_and_keeps_them() -> None:
    formatted = JsonFormatter().format(record("client %s", CONTROLS, exc_info=raised(CONTROLS)))
    assert formatted.splitlines() == [formatted]
    assert not set(formatted) & CONTROL_CHARACTERS
    event = json.loads(formatted)
    assert event["message"] == f"client {CONTROLS}"
    assert event["exception"].endswith(f"ValueError: {CONTROLS}")


def test_uvicorn_lines_escape_their_message() -> None:
    formatter = UvicornFormatter("%(levelprefix)s %(message)s", use_colors=False)
    assert formatter.format(record("Invalid request from %s", f"x{CONTROLS}")) == (
        f"WARNING:  Invalid request from x{ESCAPED}"
    )


def test_uvicorn_access_lines_escape_the_client_and_the_request_line() -> None:
    formatter = UvicornAccessFormatter(
        '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False
    )
    access = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        (f"10.0.0.1{CONTROLS}:0", "GET", "/x\x1b[2J", "1.1", 200),
        None,
    )
    assert formatter.format(access) == f'INFO:     10.0.0.1{ESCAPED}:0 - "GET /x\\x1b[2J HTTP/1.1" 200 OK'


LOG_EVERY_KIND = f"""
import logging, logging.config
from fhirauth.logs import uvicorn_log_config
logging.config.dictConfig(uvicorn_log_config("info", "text"))
logging.getLogger("fhirauth.demo").info("code: %s", {CONTROLS!r})
logging.getLogger("uvicorn.error").warning("from %s", {CONTROLS!r})
logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', {CONTROLS!r}, "GET", "/", "1.1", 200)
"""


def test_serves_logging_configuration_escapes_on_every_handler() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOG_EVERY_KIND], capture_output=True, text=True, check=True
    )
    assert result.stdout == f'INFO:     {ESCAPED} - "GET / HTTP/1.1" 200 OK\n'
    fhirauth_line, uvicorn_line = result.stderr.splitlines()
    assert fhirauth_line.endswith(f" INFO fhirauth.demo: code: {ESCAPED}")
    assert uvicorn_line == f"WARNING:  from {ESCAPED}"


def test_the_console_e_mail_provider_prints_no_line_a_sender_chose() -> None:
    """The console provider prints e-mails on several lines by design; no value in them starts one."""
    from fhirauth.notify import Email, console_text

    email = Email(
        to="eve@example.org\r\nSubject: forged",
        subject="Confirm\x1b[31m",
        text="Open the link:\nhttps://x/confirm/abc\u2028Forged: line\n",
    )
    lines = console_text(email).split("\n")
    assert lines == [
        "----- e-mail (console provider) -----",
        "From: fhirauth@localhost",
        "To: eve@example.org\\r\\nSubject: forged",
        "Subject: Confirm\\x1b[31m",
        "",
        "Open the link:",
        "https://x/confirm/abc\\u2028Forged: line",
        "----- end of e-mail -----",
        "",
    ]
