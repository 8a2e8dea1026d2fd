"""The domain services one running application holds; built by app.py, read by the HTTP faces."""

from __future__ import annotations

from dataclasses import dataclass

from fhirauth.audit import AuditLog
from fhirauth.auth.authconfig import AuthConfigs
from fhirauth.auth.authenticate import Authenticator
from fhirauth.auth.authorization import AuthorizationService
from fhirauth.auth.client_auth import ClientAuthenticator
from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.codes import AuthorizationCodes
from fhirauth.auth.consent import Consents
from fhirauth.auth.grants.registry import GrantRegistry
from fhirauth.auth.introspection import Introspection
from fhirauth.auth.keys import SigningKeys
from fhirauth.auth.login import Logins, PendingLogins
from fhirauth.auth.oidc.id_token import IdTokens
from fhirauth.auth.oidc.logout import RpLogout
from fhirauth.auth.oidc.userinfo import UserInfo
from fhirauth.auth.passwords import PasswordHasher
from fhirauth.auth.policies import AccessControl
from fhirauth.auth.sessions import SessionService
from fhirauth.auth.signup import Signups
from fhirauth.auth.smart.enforcement import ScopeEnforcement
from fhirauth.auth.smart.launch import Launches
from fhirauth.auth.tokens import TokenIssuer
from fhirauth.clock import Clock
from fhirauth.notify import Notifier
from fhirauth.ratelimit import RateLimiter, RateLimits
from fhirauth.resources.bundles import BundleProcessor
from fhirauth.resources.service import ResourceService
from fhirauth.secretbox import SecretBox
from fhirauth.settings import Settings
from fhirauth.storage.base import Storage
from fhirauth.twofactor.passkeys.service import PasskeyService
from fhirauth.twofactor.service import TwoFactorService
from fhirauth.twofactor.trusted_devices import TrustedDevices


@dataclass
class Services:
    settings: Settings
    clock: Clock
    storage: Storage
    box: SecretBox
    passwords: PasswordHasher
    resources: ResourceService
    bundles: BundleProcessor
    clients: ClientRegistry
    authenticator: Authenticator
    access: AccessControl
    audit: AuditLog
    auth_config: AuthConfigs
    notifier: Notifier
    logins: Logins
    pending_logins: PendingLogins
    consents: Consents
    signups: Signups
    keys: SigningKeys
    sessions: SessionService
    tokens: TokenIssuer
    id_tokens: IdTokens
    userinfo: UserInfo
    rp_logout: RpLogout
    codes: AuthorizationCodes
    authorization: AuthorizationService
    client_auth: ClientAuthenticator
    grants: GrantRegistry
    introspection: Introspection
    twofactor: TwoFactorService
    passkeys: PasskeyService
    trusted_devices: TrustedDevices
    rate_limiter: RateLimiter
    rate_limits: RateLimits
    launches: Launches
    scope_enforcement: ScopeEnforcement
