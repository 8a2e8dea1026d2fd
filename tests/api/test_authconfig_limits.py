"""AuthConfig values that used to reach a 500 at sign-in: refused when written, or survived when sent.

A lockout long enough to overflow a date, webhook headers that HTTP cannot carry, and an endpoint whose
port does not exist were each stored and then crashed the TOTP step. Settings are refused when they are
written (422, nothing stored); a webhook that cannot be sent is a failed delivery, like a receiver that
does not answer, never an error of the page that sent it.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from fhirauth.twofactor.config import Webhook
from fhirauth.twofactor.webhook import WebhookSender


def put_config(api: TestClient, two_factor: dict[str, Any], **top: Any) -> Any:
    return api.put("/AuthConfig/app", json={"resourceType": "AuthConfig", "twoFactor": two_factor, **top})


def test_a_session_lifetime_past_any_date_is_refused(api: TestClient) -> None:
    response = put_config(api, {}, asidCookieMaxAge=2**62)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["AuthConfig.asidCookieMaxAge"]
    assert put_config(api, {}, asidCookieMaxAge=315_360_000).status_code == 201


@pytest.mark.parametrize(
    ("two_factor", "expression"),
    [
        ({"lockoutSeconds": 2**62}, "AuthConfig.twoFactor.lockoutSeconds"),
        ({"lockoutSeconds": 31_536_001}, "AuthConfig.twoFactor.lockoutSeconds"),
        (
            {"webhook": {"endpoint": "https://sms.example.org/", "headers": {"X-Key": "é€"}}},
            "AuthConfig.twoFactor.webhook.headers.X-Key",
        ),
        (
            {"webhook": {"endpoint": "https://sms.example.org/", "headers": {"X-Key": "a\r\nInjected: 1"}}},
            "AuthConfig.twoFactor.webhook.headers.X-Key",
        ),
        (
            {"webhook": {"endpoint": "https://sms.example.org/", "headers": {"Bad Name": "v"}}},
            "AuthConfig.twoFactor.webhook.headers",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused_when_written(
    api: TestClient, two_factor: dict[str, Any], expression: str
) -> None:
    response = put_config(api, two_factor)
    assert response.status_code == 422, response.text
    issues = response.json()["issue"]
    assert any(issue.get("expression") == [expression] for issue in issues), issues
    assert api.get("/AuthConfig/app").status_code == 404


def test_the_longest_lockout_and_plain_headers_are_accepted(api: TestClient) -> None:
    response = put_config(
        api,
        {
            "lockoutSeconds": 31_536_000,
            "webhook": {"endpoint": "https://sms.example.org/", "headers": {"Authorization": "Basic YTpi"}},
        },
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "hook",
    [
        Webhook("http://127.0.0.1:99999/hook", timeout_ms=500),
        Webhook("http://[::1/hook", timeout_ms=500),
        Webhook("http://127.0.0.1:9/hook", timeout_ms=500, headers={"X-Key": "é€"}),
    ],
)
async def test_a_webhook_that_cannot_be_sent_is_a_failed_delivery(hook: Webhook) -> None:
    sender = WebhookSender()
    try:
        reason = await sender.send(hook, {"resourceType": "User", "id": "ann"}, "123456")
    finally:
        await sender.close()
    assert reason == "the webhook settings cannot be sent"
