"""What the benchmark measures, as one table. A new scenario (the token endpoint, say) is one more row,
plus a dataset in datasets.py if it needs other data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from oauth_data import CLIENT_AUTH, JWT_CLIENT_AUTH, SIGNING_ALG_CLIENT_AUTH, OAuthRuns

MINIMAL = "minimal app: GET /User/{id}"
# The same app under fhirauth's HTTP protocol (one socket write per response, fhirauth/http/serving/protocol.py):
# for the ratios of like to like, beside the targets' reference, which is plain uvicorn.
MINIMAL_ONE_WRITE = "minimal app, one write per response: GET /User/{id}"
ARGON2 = "argon2id verify, in-process, 2 threads"
ROOT = "root"
FORM = "application/x-www-form-urlencoded"

# What a scenario's request files hold when they must be written against the running server, just
# before each wrk run of `seconds` (warm-up or measured): extra request.lua arguments and -H headers.
RunSetup = Callable[[OAuthRuns, str, float], tuple[list[str], list[str]]]


@dataclass(frozen=True)
class AtLeast:
    """The scenario's req/s must reach `fraction` of another scenario's."""

    fraction: float
    of: str

    def describe(self) -> str:
        return f"≥ {self.fraction:.0%} of {'minimal' if self.of == MINIMAL else self.of}"


@dataclass(frozen=True)
class Scenario:
    name: str
    server: Literal["minimal", "minimal-one-write", "fhirauth"]
    dataset: str
    method: str = "GET"
    path: str = "/"
    # A file of the dataset with one request path per line; each request takes a random one.
    paths: str | None = None
    # A file of the dataset sent as the body of every request.
    body: str | None = None
    content_type: str = "application/json"
    # A file of the dataset with "AUTHORIZATION<TAB>BODY" per line, taken in turn (request.lua).
    lines: str | None = None
    goal: AtLeast | None = None
    # The Authorization header of every request: ROOT (HTTP Basic as root), another value, or None.
    authorization: str | None = ROOT
    setup: RunSetup | None = None
    # No server and no wrk: run.py times PasswordHasher.verify in its own process (ARGON2).
    in_process: bool = False

    def script_args(self, data: Path) -> list[str]:
        args = [f"method={self.method}"]
        if self.paths:
            args.append(f"paths={data / self.paths}")
        if self.body:
            args += [f"body={data / self.body}", f"type={self.content_type}"]
        if self.lines:
            args += [f"lines={data / self.lines}", f"type={self.content_type}"]
        return args


def _introspect(runs: OAuthRuns, url: str, seconds: float) -> tuple[list[str], list[str]]:
    return [f"body={runs.introspect_body(url)}", f"type={FORM}"], []


def _userinfo(runs: OAuthRuns, url: str, seconds: float) -> tuple[list[str], list[str]]:
    return [], [f"Authorization: Bearer {runs.userinfo_token(url)}"]


# Requests per second a run of a one-use scenario is given users for; beyond that, requests repeat
# a used code and are refused (counted as errors, so the scenario shows as missed).
PASSWORD_TOTP_CAP = 200
# With the default 2 + 10 s of load, the oauth dataset's 120,000 2FA users cover all three with
# about 15,000 left for the in-process check. VERIFY_CAP is above 25 % of the minimal app's best rate
# (31,000 req/s on the machine of 2026-12-02 afternoon).
VERIFY_CAP = 8_000
DISABLE_CAP = 3_000


# Assertions a run of the private_key_jwt scenario is given per second (each is accepted once, and a
# request past the last one would repeat one, refused and counted as an error). Above the opaque
# client_credentials grant's best rate on this machine (9,233 req/s, 2026-12-06), which bounds this
# scenario's: the same grant plus the assertion's verification and the jti's write. Signing them costs
# the bench ~0.26 ms of CPU each before the run, spread over the cores (about 13 s for a 10 s run).
PRIVATE_KEY_JWT_CAP = 10_000


def _private_key_jwt(runs: OAuthRuns, url: str, seconds: float) -> tuple[list[str], list[str]]:
    lines = runs.private_key_jwt_lines(url, int(seconds * PRIVATE_KEY_JWT_CAP))
    return [f"lines={lines}", f"type={FORM}"], []


def _password_totp(runs: OAuthRuns, url: str, seconds: float) -> tuple[list[str], list[str]]:
    lines = runs.password_totp_lines(int(seconds * PASSWORD_TOTP_CAP))
    return [f"lines={lines}", f"type={FORM}"], []


# Codes are minted over HTTP before each run (about 500 a second on the loaded 2-core machine of
# 2026-12-06) and live 60 s: at this cap a 10 s run's codes are all minted and used within that life.
CODE_CAP = 2_500


def _code(runs: OAuthRuns, url: str, seconds: float) -> tuple[list[str], list[str]]:
    return [f"lines={runs.code_lines(url, int(seconds * CODE_CAP), openid=False)}", f"type={FORM}"], []


def _code_openid(runs: OAuthRuns, url: str, seconds: float) -> tuple[list[str], list[str]]:
    return [f"lines={runs.code_lines(url, int(seconds * CODE_CAP), openid=True)}", f"type={FORM}"], []


def _verify(runs: OAuthRuns, url: str, seconds: float) -> tuple[list[str], list[str]]:
    return [f"lines={runs.bearer_code_lines(int(seconds * VERIFY_CAP), 'verify-lines.txt')}"], []


def _disable(runs: OAuthRuns, url: str, seconds: float) -> tuple[list[str], list[str]]:
    return [f"lines={runs.bearer_code_lines(int(seconds * DISABLE_CAP), 'disable-lines.txt')}"], []


# Passkey finishes a run is given per second: challenges are made over HTTP before the run (each lives
# 300 s and is taken once) and signed by software authenticators. Above the finish's best rate so far
# (1,700 req/s, 2026-12-06); minting them ran at about 800 a second.
PASSKEY_CAP = 3_000


def _passkey(runs: OAuthRuns, url: str, seconds: float) -> tuple[list[str], list[str]]:
    return [f"lines={runs.passkey_lines(url, int(seconds * PASSKEY_CAP))}"], []


CLIENT_CREDENTIALS = "POST /auth/token client_credentials (opaque)"
PASSWORD_GRANT = "POST /auth/token password"
CODE_GRANT = "POST /auth/token authorization_code"

# Run in this order. Consecutive scenarios of one (server, dataset) share one freshly seeded store
# (each gets a fresh server process), so writes come last in their group.
SCENARIOS = (
    Scenario(MINIMAL, "minimal", "1k", paths="user-paths.txt"),
    Scenario(MINIMAL_ONE_WRITE, "minimal-one-write", "1k", paths="user-paths.txt"),
    Scenario("GET /User/{id}", "fhirauth", "1k", paths="user-paths.txt", goal=AtLeast(0.40, MINIMAL)),
    Scenario(
        "GET /User?email= (1k users)", "fhirauth", "1k", paths="email-paths.txt", goal=AtLeast(0.30, MINIMAL)
    ),
    Scenario(
        "POST /User",
        "fhirauth",
        "1k",
        method="POST",
        path="/User",
        body="new-user.json",
        goal=AtLeast(0.20, MINIMAL),
    ),
    Scenario(
        "GET /User?email= (100k users)",
        "fhirauth",
        "100k",
        paths="email-paths.txt",
        goal=AtLeast(0.80, "GET /User?email= (1k users)"),
    ),
    # The authorization-server and two-factor targets: see "OAuth and two-factor" in README.md.
    Scenario(
        CLIENT_CREDENTIALS,
        "fhirauth",
        "oauth",
        method="POST",
        path="/auth/token",
        body="client-credentials.txt",
        content_type=FORM,
        authorization=CLIENT_AUTH,
        goal=AtLeast(0.30, MINIMAL),
    ),
    Scenario(
        "POST /auth/token client_credentials (JWT)",
        "fhirauth",
        "oauth",
        method="POST",
        path="/auth/token",
        body="client-credentials.txt",
        content_type=FORM,
        authorization=JWT_CLIENT_AUTH,
        goal=AtLeast(0.15, MINIMAL),
    ),
    Scenario(
        "POST /auth/token client_credentials (JWT ES256)",
        "fhirauth",
        "oauth",
        method="POST",
        path="/auth/token",
        body="client-credentials.txt",
        content_type=FORM,
        authorization=SIGNING_ALG_CLIENT_AUTH["ES256"],
        goal=AtLeast(0.30, MINIMAL),
    ),
    Scenario(
        "POST /auth/token client_credentials (JWT EdDSA)",
        "fhirauth",
        "oauth",
        method="POST",
        path="/auth/token",
        body="client-credentials.txt",
        content_type=FORM,
        authorization=SIGNING_ALG_CLIENT_AUTH["EdDSA"],
    ),
    # SMART Backend Services: client_credentials with an RS384 client assertion instead of a secret.
    Scenario(
        "POST /auth/token client_credentials (private_key_jwt)",
        "fhirauth",
        "oauth",
        method="POST",
        path="/auth/token",
        authorization=None,
        setup=_private_key_jwt,
        goal=AtLeast(0.50, CLIENT_CREDENTIALS),
    ),
    Scenario(
        "POST /auth/introspect (opaque)",
        "fhirauth",
        "oauth",
        method="POST",
        path="/auth/introspect",
        authorization=CLIENT_AUTH,
        setup=_introspect,
        goal=AtLeast(0.35, MINIMAL),
    ),
    Scenario(
        "GET /auth/userinfo",
        "fhirauth",
        "oauth",
        path="/auth/userinfo",
        authorization=None,
        setup=_userinfo,
        goal=AtLeast(0.35, MINIMAL),
    ),
    # Timed right before the password grant: the machine's load moves by the minute, and the ratio
    # must compare the two under the same load.
    Scenario(ARGON2, "fhirauth", "oauth", in_process=True),
    Scenario(
        PASSWORD_GRANT,
        "fhirauth",
        "oauth",
        method="POST",
        path="/auth/token",
        lines="password-grant-lines.txt",
        content_type=FORM,
        authorization=None,
        goal=AtLeast(0.80, ARGON2),
    ),
    Scenario(
        "POST /auth/token password + totp",
        "fhirauth",
        "oauth",
        method="POST",
        path="/auth/token",
        authorization=None,
        setup=_password_totp,
        goal=AtLeast(0.95, PASSWORD_GRANT),
    ),
    # Each request redeems a code of its own (minted by one browser sign-in just before the run).
    Scenario(
        CODE_GRANT,
        "fhirauth",
        "oauth",
        method="POST",
        path="/auth/token",
        authorization=None,
        setup=_code,
    ),
    # The same with the openid scope: the response carries an RS256 ID token signed for it.
    Scenario(
        "POST /auth/token authorization_code + openid (id_token signed)",
        "fhirauth",
        "oauth",
        method="POST",
        path="/auth/token",
        authorization=None,
        setup=_code_openid,
    ),
    # Writes. The two-factor check: each request a different user's current code, accepted and spent
    # (the replay guard's write included), behind the user's bearer token.
    Scenario(
        "POST /app/auth/two-factor/verify (TOTP check)",
        "fhirauth",
        "oauth",
        method="POST",
        path="/app/auth/two-factor/verify",
        authorization=None,
        setup=_verify,
        goal=AtLeast(0.25, MINIMAL),
    ),
    # The passkey step-up finish: the challenge taken, the credential read, one ES256 signature
    # verified, the counter and its AuditEvent written in one commit, behind the user's bearer token.
    Scenario(
        "POST /app/auth/two-factor/passkeys/authentication (passkey finish)",
        "fhirauth",
        "oauth",
        method="POST",
        path="/app/auth/two-factor/passkeys/authentication",
        authorization=None,
        setup=_passkey,
        goal=AtLeast(0.20, MINIMAL),
    ),
    # The same check, then the User write, the AuditEvent and the notice e-mail of turning 2FA off.
    Scenario(
        "POST /app/auth/two-factor/disable (TOTP verify)",
        "fhirauth",
        "oauth",
        method="POST",
        path="/app/auth/two-factor/disable",
        authorization=None,
        setup=_disable,
    ),
)

# Seeding the dataset with `fhirauth seed`, and the server's memory after its scenarios.
SEED_GOAL_PER_SECOND = 5_000
RSS_GOAL_MB = 250
MEASURED_DATASET = "100k"
