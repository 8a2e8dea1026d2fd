"""Structured logging: one line per event, text for people or JSON for collectors.

Nothing a client sends can start a line of its own: the text formats write the control characters of
every message and argument as escapes, and indent a traceback under its line; the JSON format escapes
them by encoding.
"""

from __future__ import annotations

import copy
import logging
import logging.config
from typing import Any
from urllib.parse import unquote_plus

import orjson
from uvicorn.logging import AccessFormatter, DefaultFormatter

from fhirauth.audit import is_secret_key

_RESERVED = set(vars(logging.makeLogRecord({})))
# C0, DEL, C1 and the Unicode line and paragraph separators: every character that can end a line (for
# Python's splitlines, for JavaScript, for a terminal) or drive a terminal (ESC, CSI).
_CONTROLS = (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
_TEXT_ESCAPES = {code: repr(chr(code))[1:-1] for code in _CONTROLS}
# orjson escapes C0 only; JSON allows the rest raw, in a string, written as \uXXXX just as well.
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in _CONTROLS if code >= 0x7F}
# Loggers whose debug lines carry whole stored documents: password hashes, and credentials stored as
# configured (webhook headers, SMTP passwords). They stay at INFO even when fhirauth logs at DEBUG.
_DOCUMENT_LOGGERS = ("pymongo.command",)


def escape_controls(text: str) -> str:
    """`text` with its control characters written as Python escapes (`\\r`, `\\x1b`, `\\u2028`).

    Backslashes are left as they are: a client can make a line read ambiguously, not break it.
    """
    # Most messages have none: isprintable is one pass in C, translate a dictionary lookup a character.
    return text if text.isprintable() else text.translate(_TEXT_ESCAPES)


def _continuation(text: str) -> str:
    """A traceback under its record's line: escaped, and every line indented, so none passes for a record."""
    return "\n".join("  " + escape_controls(line) for line in text.split("\n"))


class TextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _continuation(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _continuation(super().formatStack(stack_info))


class UvicornFormatter(TextFormatter, DefaultFormatter):
    """uvicorn's own lines (its level prefix and colours), escaped like fhirauth's. (On a terminal,
    uvicorn recolours a few start-up lines from their arguments: its own host, port and process id.)"""


class UvicornAccessFormatter(TextFormatter, AccessFormatter):
    """uvicorn's access lines, which it builds from the record's arguments rather than its message."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        escaped = copy.copy(record)
        if isinstance(record.args, tuple):
            escaped.args = tuple(escape_controls(arg) if isinstance(arg, str) else arg for arg in record.args)
        return super().formatMessage(escaped)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        event.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        line = orjson.dumps(event, default=str).decode()
        # orjson writes C0 as escapes, so an ASCII line without DEL has nothing left to escape.
        return line if line.isascii() and "\x7f" not in line else line.translate(_JSON_ESCAPES)


def _config(level: str, fmt: str) -> dict[str, Any]:
    """The `logging.config.dictConfig` of fhirauth's own lines: the root logger at `level`."""
    formatter: dict[str, Any] = (
        {"()": "fhirauth.logs.JsonFormatter"}
        if fmt == "json"
        else {
            "class": "fhirauth.logs.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        }
    )
    floor = logging.getLevelName(max(logging.INFO, logging.getLevelName(level.upper())))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"fhirauth": formatter},
        "handlers": {
            "fhirauth": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "fhirauth",
            }
        },
        "root": {"handlers": ["fhirauth"], "level": level.upper()},
        "loggers": {name: {"level": floor} for name in _DOCUMENT_LOGGERS},
    }


def configure(level: str, fmt: str) -> None:
    logging.config.dictConfig(_config(level, fmt))


class RedactedQueries(logging.Filter):
    """Masks the values of query parameters that may hold a secret in uvicorn's access lines.

    A sign-up confirmation link carries its single-use token in the query, so that the e-mail works
    with any mail reader; without this, anyone who reads the access log could finish the sign-up.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _redact_query(arg) if isinstance(arg, str) and "?" in arg else arg for arg in record.args
            )
        return True


def _redact_query(target: str) -> str:
    path, _, query = target.partition("?")
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        pairs.append(f"{name}=***" if equals and is_secret_key(unquote_plus(name)) else pair)
    return f"{path}?{'&'.join(pairs)}"


def uvicorn_log_config(level: str, fmt: str) -> dict[str, Any]:
    """uvicorn's own logging configuration with RedactedQueries on the access log, plus fhirauth's.

    uvicorn applies it in every worker process it starts, where `configure` (run by the `fhirauth`
    command in the parent) never ran: without it the workers' own lines went nowhere.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    ours = _config(level, fmt)
    config["filters"] = {"redacted_queries": {"()": "fhirauth.logs.RedactedQueries"}}
    config["formatters"]["default"]["()"] = "fhirauth.logs.UvicornFormatter"
    config["formatters"]["access"]["()"] = "fhirauth.logs.UvicornAccessFormatter"
    config["handlers"]["access"]["filters"] = ["redacted_queries"]
    config["formatters"].update(ours["formatters"])
    config["handlers"].update(ours["handlers"])
    config["loggers"].update(ours["loggers"])
    config["root"] = ours["root"]
    return config
