"""Delivering the current code to AuthConfig.twoFactor.webhook (an SMS gateway, say)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx2

from fhirauth.resources.secrets import redact
from fhirauth.twofactor.config import Webhook

log = logging.getLogger("fhirauth.twofactor.webhook")


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
        else:
            if response.status_code < 400:
                return None
            reason = f"answered {response.status_code}"
        log.warning("two-factor webhook %s failed for user %s: %s", webhook.endpoint, user.get("id"), reason)
        return reason

    async def close(self) -> None:
        await self._client.aclose()
