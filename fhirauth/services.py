"""The domain services one running application holds; built by app.py, read by the HTTP faces."""

from __future__ import annotations

from dataclasses import dataclass

from fhirauth.audit import AuditLog
from fhirauth.auth.authconfig import AuthConfigs
from fhirauth.auth.authenticate import Authenticator
from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.consent import Consents
from fhirauth.auth.login import Logins, PendingLogins
from fhirauth.auth.passwords import PasswordHasher
from fhirauth.auth.policies import AccessControl
from fhirauth.auth.signup import Signups
from fhirauth.clock import Clock
from fhirauth.notify import Notifier
from fhirauth.resources.bundles import BundleProcessor
from fhirauth.resources.service import ResourceService
from fhirauth.secretbox import SecretBox
from fhirauth.settings import Settings
from fhirauth.storage.base import Storage


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
