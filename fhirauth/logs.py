"""Structured logging: one line per event, text for people or JSON for collectors."""

from __future__ import annotations

import copy
import logging
import logging.config
from typing import Any
from urllib.parse import unquote_plus

import orjson

from fhirauth.audit import is_secret_key

_RESERVED = set(vars(logging.makeLogRecord({})))
# Loggers whose debug lines carry whole stored documents: password hashes, and credentials stored as
# configured (webhook headers, SMTP passwords). They stay at INFO even when fhirauth logs at DEBUG.
_DOCUMENT_LOGGERS = ("pymongo.command",)


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
        return orjson.dumps(event, default=str).decode()


def _config(level: str, fmt: str) -> dict[str, Any]:
    """The `logging.config.dictConfig` of fhirauth's own lines: the root logger at `level`."""
    formatter: dict[str, Any] = (
        {"()": "fhirauth.logs.JsonFormatter"}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
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
    config["handlers"]["access"]["filters"] = ["redacted_queries"]
    config["formatters"].update(ours["formatters"])
    config["handlers"].update(ours["handlers"])
    config["loggers"].update(ours["loggers"])
    config["root"] = ours["root"]
    return config
