"""Wiring: settings → storage → services → routes. The only module that knows all three layers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from fhirauth import collector
from fhirauth.audit import AuditLog
from fhirauth.auth.authconfig import AuthConfigs
from fhirauth.auth.authenticate import Authenticator
from fhirauth.auth.authorization import AuthorizationService
from fhirauth.auth.bruteforce import BruteForcePolicy, PasswordLockout
from fhirauth.auth.client_assertion import ClientAssertions
from fhirauth.auth.client_auth import ClientAuthenticator, ClientAuthLimits
from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.codes import AuthorizationCodes
from fhirauth.auth.consent import Consents
from fhirauth.auth.grants.authorization_code import AuthorizationCodeGrant
from fhirauth.auth.grants.client_credentials import ClientCredentialsGrant
from fhirauth.auth.grants.password import PasswordGrant
from fhirauth.auth.grants.refresh_token import RefreshTokenGrant
from fhirauth.auth.grants.registry import GrantRegistry
from fhirauth.auth.introspection import Introspection
from fhirauth.auth.jwks_fetch import JwksFetcher
from fhirauth.auth.keys import SigningKeys
from fhirauth.auth.login import Logins, PendingLogins
from fhirauth.auth.oidc.amr import AMR_CLAIMS
from fhirauth.auth.oidc.id_token import IdTokens
from fhirauth.auth.oidc.logout import RpLogout
from fhirauth.auth.oidc.userinfo import UserInfo
from fhirauth.auth.passwords import HashingBusy, PasswordHasher
from fhirauth.auth.policies import AccessControl
from fhirauth.auth.sessions import SessionService
from fhirauth.auth.signup import Signups
from fhirauth.auth.smart.authorization import SmartAuthorization
from fhirauth.auth.smart.claims import FHIR_USER_CLAIM
from fhirauth.auth.smart.enforcement import ScopeEnforcement
from fhirauth.auth.smart.launch import Launches
from fhirauth.auth.tokens import TokenIssuer
from fhirauth.clock import Clock, system_clock
from fhirauth.http import (
    demo,
    errors,
    health,
    oauth,
    openapi,
    pages,
    rest,
    smart,
    trusted_devices_api,
    twofactor_api,
    twofactor_pages,
    webauthn_api,
    webauthn_pages,
)
from fhirauth.http.limits import hashing_busy, rate_limited, request_address
from fhirauth.http.serving.application import App
from fhirauth.keyfile import master_secrets, root_secret
from fhirauth.maintenance import purge_expired_records
from fhirauth.notify import Notifier
from fhirauth.ratelimit import FailureLimiter, RateLimited, RateLimiter, RateLimits
from fhirauth.resources.bundles import BundleProcessor
from fhirauth.resources.schemas import SchemaRegistry
from fhirauth.resources.secrets import SecretFields
from fhirauth.resources.service import ResourceService
from fhirauth.secretbox import SecretBox
from fhirauth.seeding import seed_files
from fhirauth.services import Services
from fhirauth.settings import Settings
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Index, Storage, StorageUnavailable
from fhirauth.twofactor.guard import AttemptGuard
from fhirauth.twofactor.passkeys.password_grant import refuse_passkey_only
from fhirauth.twofactor.passkeys.relying_party import RelyingParty
from fhirauth.twofactor.passkeys.service import PasskeyService
from fhirauth.twofactor.password_grant import require_second_factor
from fhirauth.twofactor.pepper import RecoveryPepper
from fhirauth.twofactor.service import TwoFactorService
from fhirauth.twofactor.trusted_devices import KEY_PURPOSE, TrustedDevices
from fhirauth.twofactor.webhook import WebhookSender

log = logging.getLogger("fhirauth")

SCHEMAS_DIR = files("fhirauth") / "schemas"

INDEXES = (
    Index("User", "email"),
    Index("User", "userName"),
    Index("Session", "access_token"),
    Index("Session", "refresh_token"),
    Index("Session", "authorization_code"),
    Index("Session", "parent.id"),
    Index("Session", "user.id"),
    Index("Registration", "token"),
    # userinfo's email_verified: the user's activated Registration, found by the User it created.
    Index("Registration", "resource.id"),
    Index("Grant", "user.id"),
    Index("WebAuthnCredential", "user.id"),
)


# Compiling the schemas takes a good part of a second; a process (a test session) needs them once.
@functools.cache
def _load_schemas(directory: str | None) -> SchemaRegistry:
    """The schemas in FHIRAUTH_SCHEMAS_DIR, or else the package's own."""
    return SchemaRegistry.from_directory(Path(directory) if directory else SCHEMAS_DIR)


def build_services(
    settings: Settings, storage: Storage, clock: Clock, passwords: PasswordHasher | None = None
) -> Services:
    try:
        box = SecretBox(master_secrets(settings))
    except ValueError as error:
        raise SystemExit(f"fhirauth: FHIRAUTH_SECRET_KEY: {error}") from None
    passwords = passwords or PasswordHasher(queue=settings.password_hash_queue)
    resources = ResourceService(
        storage,
        _load_schemas(settings.schemas_dir),
        SecretFields(passwords, box),
        clock,
        base_url=settings.base_url.rstrip("/"),
    )
    rate_limiter = RateLimiter(storage, clock)
    rate_limits = RateLimits.from_settings(settings)
    client_limits = ClientAuthLimits(FailureLimiter(storage, clock), rate_limits, request_address)
    clients = ClientRegistry(
        resources, passwords, settings.root_client_id, root_secret(settings), client_limits
    )
    notifier = Notifier(resources)
    lockout = (
        PasswordLockout(
            storage,
            clock,
            BruteForcePolicy(
                failure_factor=settings.brute_force_failure_factor,
                wait_increment_seconds=settings.brute_force_wait_increment_seconds,
                max_wait_seconds=settings.brute_force_max_wait_seconds,
                max_failures=settings.brute_force_max_failures,
            ),
        )
        if settings.brute_force_protection
        else None
    )
    logins = Logins(resources, passwords, rate_limiter, rate_limits.login_account, lockout)
    issuer = settings.base_url.rstrip("/")
    keys = SigningKeys(storage, box, clock)
    sessions = SessionService(resources, clients, clock)
    id_tokens = IdTokens(keys, clock, issuer)
    id_tokens.add_source(FHIR_USER_CLAIM)
    id_tokens.add_source(AMR_CLAIMS)
    tokens = TokenIssuer(sessions, keys, clock, issuer, id_tokens)
    codes = AuthorizationCodes(storage, sessions, clock)
    jwks_fetcher = JwksFetcher(
        clock, allow_private=settings.jwks_uri_allow_private, timeout=settings.jwks_uri_timeout_seconds
    )
    assertions = ClientAssertions(clients, storage, jwks_fetcher, client_limits, clock, issuer=issuer)
    client_auth = ClientAuthenticator(clients, assertions)
    audit = AuditLog(resources, clock)
    auth_config = AuthConfigs(resources, settings.auth_config)
    twofactor = TwoFactorService(
        resources,
        resources.secrets,
        AttemptGuard(storage, clock),
        RecoveryPepper(storage, box),
        WebhookSender(),
        audit,
        notifier,
        auth_config.current,
        clock,
    )
    passkeys = PasskeyService(
        resources,
        audit,
        clock,
        RelyingParty.of(settings.base_url, settings.webauthn_rp_id, settings.webauthn_origins),
        twofactor.config,
    )
    twofactor.on_reset(passkeys.remove_all)
    trusted_devices = TrustedDevices(storage, resources, box.derived_keys(KEY_PURPOSE), audit, clock)
    twofactor.on_reset(trusted_devices.after_reset)
    passkeys.on_two_factor_off(trusted_devices.after_two_factor_off)
    password_grant = PasswordGrant(logins, tokens)
    password_grant.add_check(require_second_factor(twofactor))
    password_grant.add_check(refuse_passkey_only(passkeys))
    grants = GrantRegistry(
        client_auth,
        [
            AuthorizationCodeGrant(codes, tokens, resources),
            password_grant,
            ClientCredentialsGrant(tokens),
            RefreshTokenGrant(sessions, tokens, resources),
        ],
    )
    launches = Launches(storage, clients, clock)
    pending_logins = PendingLogins(storage, clock)
    consents = Consents(resources, clock)
    authenticator = Authenticator(clients)
    authenticator.use_bearer(sessions.resolve)
    return Services(
        settings=settings,
        clock=clock,
        storage=storage,
        box=box,
        passwords=passwords,
        resources=resources,
        bundles=BundleProcessor(resources),
        clients=clients,
        authenticator=authenticator,
        access=AccessControl(resources, clock),
        audit=audit,
        auth_config=auth_config,
        notifier=notifier,
        logins=logins,
        pending_logins=pending_logins,
        consents=consents,
        signups=Signups(resources, notifier, clock, base_url=settings.base_url),
        keys=keys,
        sessions=sessions,
        tokens=tokens,
        codes=codes,
        id_tokens=id_tokens,
        userinfo=UserInfo(storage, keys, clock, issuer),
        rp_logout=RpLogout(keys, clients, sessions, issuer),
        authorization=AuthorizationService(
            clients,
            codes,
            tokens,
            SmartAuthorization(launches, settings.base_url),
            id_tokens,
            consents,
            pending_logins,
            clock,
        ),
        launches=launches,
        scope_enforcement=ScopeEnforcement(resources),
        client_auth=client_auth,
        grants=grants,
        introspection=Introspection(sessions, issuer),
        twofactor=twofactor,
        passkeys=passkeys,
        trusted_devices=trusted_devices,
        rate_limiter=rate_limiter,
        rate_limits=rate_limits,
    )


def routes() -> list[BaseRoute]:
    # The resource routes match capitalised first segments only, so they can go first (most traffic).
    return [
        *rest.routes,
        *health.routes,
        *oauth.routes,
        *pages.routes,
        *twofactor_pages.routes,
        *twofactor_api.routes,
        *webauthn_pages.routes,
        *webauthn_api.routes,
        *trusted_devices_api.routes,
        *openapi.routes,
        *smart.routes,
    ]


async def _prepare_storage(services: Services) -> None:
    await services.storage.start(INDEXES)
    await services.keys.load()
    # `fhirauth serve` with several workers seeds before it forks and clears this setting.
    seeds = services.settings.seed_files()
    if seeds:
        await seed_files(services.bundles, [Path(p) for p in seeds])


async def _prepare_when_reachable(services: Services) -> None:
    while True:
        await asyncio.sleep(1)
        try:
            await _prepare_storage(services)
        except StorageUnavailable:
            continue
        log.info("storage reachable again")
        return


def create_served_app() -> Starlette:
    """What `fhirauth serve` runs in each worker process: the app, with the garbage collector tuned
    for serving (collector.py)."""
    collector.tune()
    return create_app(serving=True)


def create_app(
    settings: Settings | None = None,
    clock: Clock = system_clock,
    *,
    serving: bool = False,
    passwords: PasswordHasher | None = None,
) -> Starlette:
    """The application; `passwords` replaces the password hasher the settings describe (tests count
    its work)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.demo and settings.env == "production":
            # Refused rather than ignored with a warning: one of the two settings is a mistake.
            raise SystemExit(
                "fhirauth: FHIRAUTH_DEMO must not be set with FHIRAUTH_ENV=production "
                "(the demo's webhook receiver logs two-factor codes)"
            )
        storage = open_storage(settings.storage, clock)
        services = build_services(settings, storage, clock, passwords)
        app.state.services = services
        starting = None
        try:
            await _prepare_storage(services)
        except StorageUnavailable:
            # Serve 503s meanwhile; the backend is set up as soon as it answers.
            log.warning("storage unavailable at start-up; retrying in the background")
            starting = asyncio.create_task(_prepare_when_reachable(services))
        purging = asyncio.create_task(purge_expired_records(storage, clock))
        if serving:
            collector.freeze_startup()
        try:
            yield
        finally:
            purging.cancel()
            if starting is not None:
                starting.cancel()
            await services.twofactor.close()
            await services.keys.close()
            await services.client_auth.close()
            await storage.close()

    app = App(
        routes=[*routes(), *(demo.routes if settings.demo else ())],
        exception_handlers={**errors.handlers, RateLimited: rate_limited, HashingBusy: hashing_busy},
        lifespan=lifespan,
    )
    app.https = settings.base_url.startswith("https://")
    return app
