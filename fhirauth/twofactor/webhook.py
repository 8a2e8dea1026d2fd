"""Delivering the current code to AuthConfig.twoFactor.webhook (an SMS gateway, say)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx2

from fhirauth.resources.secrets import redact
from fhirauth.twofactor.config import Webhook

log = logging.getLogger("fhirauth.twofactor.webhook")

UNSENDABLE = "the webhook settings cannot be sent"


class WebhookSender:
    def __init__(self, client: httpx2.AsyncClient | None = None) -> None:
        self._client = client or httpx2.AsyncClient(follow_redirects=False)

    async def send(self, webhook: Webhook, user: dict[str, Any], code: str) -> str | None:
        """POST `{user, token}`; None on success, else why it failed (without the code).

        The whole exchange is bounded by the configured timeout, so the page that triggers it never
        waits longer than that.
        """
        # Header names are case-insensitive: a configured "content-type" would go out beside ours.
        headers = {name: value for name, value in webhook.headers.items() if name.lower() != "content-type"}
        headers["Content-Type"] = "application/json"
        timeout = webhook.timeout_ms / 1000
        if not _port_in_range(webhook.endpoint):
            # The connection would fail inside a task group, as an exception group, not an HTTPError.
            return self._failed(webhook, user, UNSENDABLE)
        try:
            # httpx's timeout bounds each phase; the deadline bounds the whole exchange.
            async with asyncio.timeout(timeout):
                response = await self._client.post(
                    webhook.endpoint,
                    json={"user": redact(user), "token": code},
                    headers=headers,
                    timeout=httpx2.Timeout(timeout),
                )
        except (TimeoutError, httpx2.TimeoutException):
            reason = f"no answer within {webhook.timeout_ms} ms"
        except httpx2.HTTPError as error:
            reason = f"{type(error).__name__}"
        # What the schema cannot see, or data stored before it could: a port past 65535, a header
        # value HTTP cannot carry. The page that sent it must still answer.
        except (httpx2.InvalidURL, UnicodeEncodeError, ValueError):
            reason = UNSENDABLE
        else:
            if response.status_code < 400:
                return None
            reason = f"answered {response.status_code}"
        return self._failed(webhook, user, reason)

    @staticmethod
    def _failed(webhook: Webhook, user: dict[str, Any], reason: str) -> str:
        log.warning("two-factor webhook %s failed for user %s: %s", webhook.endpoint, user.get("id"), reason)
        return reason

    async def close(self) -> None:
        await self._client.aclose()


def _port_in_range(endpoint: str) -> bool:
    try:
        urlsplit(endpoint).port  # noqa: B018 - parsing the port is the check: ValueError past 65535
    except ValueError:
        return False
    return True
