"""E-mail notifications through the provider named by `AidboxConfig.provider` (console or smtp)."""

from __future__ import annotations

import logging
import smtplib
import ssl
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from anyio import to_thread

from fhirauth.logs import escape_controls
from fhirauth.resources.service import ResourceService

log = logging.getLogger("fhirauth.notify")

Document = dict[str, Any]

_SMTP_TIMEOUT_SECONDS = 10.0
_DEFAULT_FROM = "fhirauth@localhost"
_MAX_CONFIGS = 20


class NotificationFailed(Exception):
    """The provider could not deliver the message (the reason is logged, without credentials)."""


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text: str


def console_text(email: Email, sender: str = _DEFAULT_FROM) -> str:
    """The e-mail as the console provider prints it: headers, a blank line, the body.

    Its lines are the ones written here: control characters in the values are escaped, as in logs, so an
    address or a body cannot print a line of its own.
    """
    body = "\n".join(escape_controls(line) for line in email.text.rstrip().split("\n"))
    return (
        "----- e-mail (console provider) -----\n"
        f"From: {escape_controls(sender)}\n"
        f"To: {escape_controls(email.to)}\n"
        f"Subject: {escape_controls(email.subject)}\n"
        "\n"
        f"{body}\n"
        "----- end of e-mail -----\n"
    )


def send_console(email: Email, provider: Document) -> None:
    # sys.stdout is looked up per call, so redirected or captured output sees the message.
    sys.stdout.write(console_text(email, provider.get("from") or _DEFAULT_FROM))
    sys.stdout.flush()


def smtp_message(email: Email, provider: Document) -> EmailMessage:
    message = EmailMessage()
    message["From"] = provider.get("from") or provider.get("username") or _DEFAULT_FROM
    message["To"] = email.to
    message["Subject"] = email.subject
    message.set_content(email.text)
    return message


def send_smtp(message: EmailMessage, provider: Document) -> None:
    """Deliver over SMTP: `ssl` = implicit TLS (SMTP_SSL), `tls` = STARTTLS, neither = plain."""
    host = provider.get("host") or "localhost"
    use_ssl = provider.get("ssl") is True
    port = int(provider.get("port") or (465 if use_ssl else 587 if provider.get("tls") else 25))
    # smtplib's own default context checks no certificate; verify the server like a browser would.
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if use_ssl:
        smtp = smtplib.SMTP_SSL(host, port, timeout=_SMTP_TIMEOUT_SECONDS, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=_SMTP_TIMEOUT_SECONDS)
    with smtp:
        if provider.get("tls") is True and not use_ssl:
            smtp.starttls(context=context)
        username, password = provider.get("username"), provider.get("password")
        if username and password:
            smtp.login(username, password)
        smtp.send_message(message)


class Notifier:
    """`send(to, subject, text)`: deliver an e-mail through the configured default provider."""

    def __init__(self, resources: ResourceService) -> None:
        self._resources = resources

    async def provider(self) -> Document:
        """The default provider's settings; console (with a warning) when none is configured."""
        config = await self._provider_config()
        providers = config.get("provider") if config else None
        if isinstance(providers, dict):
            name = providers.get("default")
            chosen = providers.get(name) if isinstance(name, str) else None
            if isinstance(chosen, dict) and chosen.get("type") in ("console", "smtp"):
                return chosen
            log.warning("AidboxConfig.provider names no usable default provider; printing e-mail to stdout")
        else:
            log.warning("no AidboxConfig with a provider; printing e-mail to stdout")
        return {"type": "console"}

    async def send(self, to: str, subject: str, text: str) -> None:
        email = Email(to, subject, text)
        provider = await self.provider()
        if provider["type"] == "console":
            send_console(email, provider)
            return
        try:
            # ValueError: a value no header may carry (CR/LF in an address stored before User.email
            # refused them, or in the provider's `from`), or a port that is no number.
            await to_thread.run_sync(send_smtp, smtp_message(email, provider), provider)
        except (OSError, smtplib.SMTPException, ValueError) as error:
            # The error text never holds the password; the provider settings are not logged.
            log.error("sending %r to %s through smtp %s failed: %s", subject, to, provider.get("host"), error)
            raise NotificationFailed(str(error)) from None
        log.info("sent %r to %s through smtp %s", subject, to, provider.get("host"))

    async def _provider_config(self) -> Document | None:
        # Aidbox keeps it in AidboxConfig/provider; any AidboxConfig with a `provider` key will do.
        named = await self._resources.find("AidboxConfig", "provider")
        if named is not None and "provider" in named.document:
            return named.document
        _, page = await self._resources.search("AidboxConfig", [("_count", str(_MAX_CONFIGS))])
        return next((doc for doc in page.items if "provider" in doc), None)
