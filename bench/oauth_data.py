"""The OAuth and two-factor dataset: Clients, Users with passwords and 2FA, and their bearer tokens.

Request files that hold codes or tokens are written while the server runs (`OAuthRuns`), just
before each wrk run: a TOTP code is valid for its 30 s step only and accepted once per user.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx2
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc.jwk import RSAKey

from fhirauth.auth.passwords import PasswordHasher
from fhirauth.security import token_hash
from fhirauth.twofactor import totp

# The software authenticator of the passkey tests (ES256, attestation none).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.webauthn_key import SoftKey  # noqa: E402

CLIENT_ID = "bench"
JWT_CLIENT_ID = "bench-jwt"
# JWT access tokens signed with each other algorithm (Client.auth.<flow>.token_signing_alg).
SIGNING_ALG_CLIENT_IDS = {"ES256": "bench-es256", "EdDSA": "bench-eddsa"}
# A backend service (private_key_jwt, RS384): no secret, its public key registered inline.
PKJWT_CLIENT_ID = "bench-pkjwt"
PKJWT_KEY_FILE = "pkjwt-key.pem"
PKJWT_SCOPE = "system/User.rs"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_SECRET = "bench client secret"
PASSWORD = "bench password of decent length"
PASSWORD_USERS = 100
BUNDLE_SIZE = 500

# Every per-address and per-account limit, raised: all wrk traffic comes from 127.0.0.1 (and the
# password grant signs the same 100 users in again and again). Still counted in storage, in leased
# shares of a hundredth of each limit (fhirauth/ratelimit.py).
RATE_LIMIT_ENV = {
    f"FHIRAUTH_RATE_LIMIT_{name}": "1000000000/minute"
    for name in ("LOGIN_IP", "LOGIN_ACCOUNT", "TOKEN_IP", "SIGNUP_IP", "SIGNUP_EMAIL", "TWO_FACTOR_IP")
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


CLIENT_AUTH = basic(CLIENT_ID, CLIENT_SECRET)
JWT_CLIENT_AUTH = basic(JWT_CLIENT_ID, CLIENT_SECRET)

# The code grant: a first-party Client that redeems the codes, and one browser sign-in (User/pw0's,
# whose `asid` cookie value is BROWSER_COOKIE) that has them minted through /auth/authorize.
CODE_CLIENT_ID = "bench-code"
CODE_CLIENT_AUTH = basic(CODE_CLIENT_ID, CLIENT_SECRET)
CODE_REDIRECT = "http://127.0.0.1:9/cb"
BROWSER_COOKIE = "bench-browser-sign-in-of-pw0-3f9c2a7e5b1d4c8a"
# The code Client and the browser Session: OAuthDataset.resources counts them.
CODE_GRANT_RESOURCES = 2
_MINT_THREADS = 8
# The passkey scenario: its users, each with one passkey, and the operations' path.
PASSKEY_USERS = 256
PASSKEYS = "/app/auth/two-factor/passkeys"
SIGNING_ALG_CLIENT_AUTH = {alg: basic(id, CLIENT_SECRET) for alg, id in SIGNING_ALG_CLIENT_IDS.items()}


@dataclass(frozen=True)
class OAuthDataset:
    """Clients (opaque tokens, and JWTs signed with each algorithm), PASSWORD_USERS Users with a password, and `totp_users`
    Users with a password, 2FA enabled with a known secret, and one live bearer token each.

    The Users share one Argon2id hash (seed stores a value that already is a hash as it is): hashing
    tens of thousands of passwords would take longer than the benchmark. Bearer tokens are Sessions
    holding the token's SHA-256, as the token endpoint writes them; a password grant per 2FA user
    would cost an Argon2id verification each.
    """

    name: str
    totp_users: int

    @property
    def users(self) -> int:
        return PASSWORD_USERS + self.totp_users

    @property
    def resources(self) -> int:
        """The Clients, the Users, and a Session per 2FA user."""
        return 3 + len(SIGNING_ALG_CLIENT_IDS) + CODE_GRANT_RESOURCES + self.users + self.totp_users

    def bundles(self, directory: Path) -> Sequence[Path]:
        return sorted(directory.glob("bundle-*.json"))

    def prepare(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        password_hash = PasswordHasher().hash(PASSWORD)
        entries: list[dict[str, object]] = []
        signing_algs = [
            (CLIENT_ID, None),
            (JWT_CLIENT_ID, "RS256"),
            *((id, alg) for alg, id in SIGNING_ALG_CLIENT_IDS.items()),
        ]
        for id, alg in signing_algs:
            client: dict[str, object] = {
                "resourceType": "Client",
                # First-party: the 2FA check goes through the JSON 2FA operations, which answer no other.
                "first_party": True,
                "secret": CLIENT_SECRET,
                "grant_types": ["client_credentials", "password"],
            }
            if alg is not None:
                flow = {"token_format": "jwt"}
                if alg != "RS256":
                    flow["token_signing_alg"] = alg
                client["auth"] = {"client_credentials": flow}
            entries.append(_put(f"/Client/{id}", client))
        key = RSAKey.generate_key(2048, private=True, parameters={"kid": "bench-rs384"})
        (directory / PKJWT_KEY_FILE).write_bytes(key.as_pem(private=True))
        backend = {
            "resourceType": "Client",
            "grant_types": ["client_credentials"],
            "jwks": {"keys": [key.as_dict(private=False)]},
        }
        entries.append(_put(f"/Client/{PKJWT_CLIENT_ID}", backend))
        password_forms = []
        for n in range(PASSWORD_USERS):
            email = f"user{n}@oauth.bench"
            entries.append(
                _put(f"/User/pw{n}", {"resourceType": "User", "email": email, "password": password_hash})
            )
            form = {"grant_type": "password", "username": email, "password": PASSWORD}
            password_forms.append(f"{CLIENT_AUTH}\t{urlencode(form)}")
        totp_users = []
        for n in range(self.totp_users):
            id, secret, token = f"tf{n}", totp.new_secret(), secrets.token_urlsafe(32)
            user = {
                "resourceType": "User",
                "email": f"tf{n}@oauth.bench",
                "password": password_hash,
                "twoFactor": {"enabled": True, "secretKey": secret},
            }
            session = {
                "resourceType": "Session",
                "type": "password",
                "active": True,
                "client": {"resourceType": "Client", "id": CLIENT_ID},
                "user": {"resourceType": "User", "id": id},
                "access_token": token_hash(token),
            }
            entries += [_put(f"/User/{id}", user), _put(f"/Session/s-{id}", session)]
            totp_users.append({"id": id, "email": user["email"], "secret": secret, "token": token})
        entries += _code_grant_entries()
        for start in range(0, len(entries), BUNDLE_SIZE):
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": entries[start : start + BUNDLE_SIZE],
            }
            (directory / f"bundle-{start // BUNDLE_SIZE:04d}.json").write_bytes(orjson.dumps(bundle))
        (directory / "password-grant-lines.txt").write_text("\n".join(password_forms) + "\n")
        (directory / "client-credentials.txt").write_text("grant_type=client_credentials")
        (directory / "totp-users.json").write_bytes(orjson.dumps(totp_users))
        return directory


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _put(url: str, resource: dict[str, object]) -> dict[str, object]:
    return {"request": {"method": "PUT", "url": url}, "resource": resource}


def _code_grant_entries() -> list[dict[str, object]]:
    client = {
        "resourceType": "Client",
        "first_party": True,
        "secret": CLIENT_SECRET,
        "grant_types": ["authorization_code"],
        "auth": {"authorization_code": {"redirect_uri": CODE_REDIRECT}},
    }
    now = int(time.time())
    sign_in = {
        "resourceType": "Session",
        "type": "browser",
        "active": True,
        "start": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now)),
        "auth_time": now,
        "user": {"resourceType": "User", "id": "pw0"},
        "access_token": token_hash(BROWSER_COOKIE),
    }
    return [_put(f"/Client/{CODE_CLIENT_ID}", client), _put("/Session/bench-browser", sign_in)]


def _assertion_lines(job: tuple[Path, str, int, str, range]) -> list[str]:
    """The request lines of `numbers`' assertions (OAuthRuns.private_key_jwt_lines), in a worker process."""
    key_file, audience, exp, run, numbers = job
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    header = _b64(orjson.dumps({"alg": "RS384", "typ": "JWT", "kid": "bench-rs384"}))
    lines = []
    for n in numbers:
        claims = {
            "iss": PKJWT_CLIENT_ID,
            "sub": PKJWT_CLIENT_ID,
            "aud": audience,
            "exp": exp,
            "jti": f"{run}-{n}",
        }
        signing_input = header + b"." + _b64(orjson.dumps(claims))
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA384())
        form = {
            "grant_type": "client_credentials",
            "scope": PKJWT_SCOPE,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": (signing_input + b"." + _b64(signature)).decode("ascii"),
        }
        lines.append(f"\t{urlencode(form)}")
    return lines


def _post_form(url: str, form: dict[str, str], authorization: str) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=urlencode(form).encode(),
        headers={"Authorization": authorization, "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.load(response))


def _register_passkey(url: str, token: str) -> tuple[str, SoftKey]:
    """A synced, counterless passkey registered for the user of `token`."""
    authorization = f"Bearer {token}"
    key = SoftKey(urlunsplit(urlsplit(url)._replace(path="")), backup_eligible=True, counter=False)
    with httpx2.Client(timeout=30.0, headers={"Authorization": authorization}) as client:
        options = client.post(f"{url}{PASSKEYS}/registration/options", json={})
        options.raise_for_status()
        credential = key.create(options.json()["publicKey"])
        client.post(
            f"{url}{PASSKEYS}/registration", json={"name": "bench", "credential": credential}
        ).raise_for_status()
    return authorization, key


@dataclass
class OAuthRuns:
    """Request files written against the running server, before each wrk run.

    Each 2FA user is used by one request only, across all runs (a code is accepted once per user and
    step, and `disable` turns 2FA off), so runs take consecutive slices of the users: a user's first
    check is what the two-factor scenarios measure.
    """

    data: Path
    _next_user: int = 0
    _users: list[dict[str, str]] = field(default_factory=list)
    # The passkey scenario's users: bearer token and software authenticator.
    _passkeys: list[tuple[str, SoftKey]] = field(default_factory=list)

    def _take(self, count: int) -> list[dict[str, str]]:
        if not self._users:
            self._users = orjson.loads((self.data / "totp-users.json").read_bytes())
        taken = self._users[self._next_user : self._next_user + count]
        self._next_user += len(taken)
        return taken

    def introspect_body(self, url: str) -> Path:
        token = _post_form(f"{url}/auth/token", {"grant_type": "client_credentials"}, CLIENT_AUTH)[
            "access_token"
        ]
        path = self.data / "introspect.txt"
        path.write_text(urlencode({"token": token}))
        return path

    def userinfo_token(self, url: str) -> str:
        form = {"grant_type": "password", "username": "user0@oauth.bench", "password": PASSWORD}
        return str(_post_form(f"{url}/auth/token", form, CLIENT_AUTH)["access_token"])

    def password_totp_lines(self, count: int) -> Path:
        """`count` password grants with a current TOTP code, each for a user of its own."""
        step = totp.step_at(time.time())
        lines = []
        for user in self._take(count):
            form = {
                "grant_type": "password",
                "username": user["email"],
                "password": PASSWORD,
                "totp": totp.code_at(user["secret"], step),
            }
            lines.append(f"{CLIENT_AUTH}\t{urlencode(form)}")
        return self._write("password-totp-lines.txt", lines)

    def bearer_code_lines(self, count: int, name: str) -> Path:
        """`count` `{"token": code}` requests (`POST /app/auth/two-factor/verify` or `disable`), each
        with its own user's bearer token and current code."""
        step = totp.step_at(time.time())
        lines = []
        for user in self._take(count):
            body = orjson.dumps({"token": totp.code_at(user["secret"], step)}).decode()
            lines.append(f"Bearer {user['token']}\t{body}")
        return self._write(name, lines)

    def code_lines(self, url: str, count: int, *, openid: bool) -> Path:
        """`count` authorization code grants, each with a code of its own minted just now (a code lives
        60 s and is redeemed once); with `openid`, codes of OpenID requests, whose grants sign an ID token."""
        query = {"client_id": CODE_CLIENT_ID, "response_type": "code", "redirect_uri": CODE_REDIRECT}
        if openid:
            query.update(scope="openid", nonce="bench-nonce")
        authorize = f"{url}/auth/authorize?{urlencode(query)}"

        def mint(how_many: int) -> list[str]:
            with httpx2.Client(cookies={"asid": BROWSER_COOKIE}, timeout=30.0) as browser:
                locations = [browser.get(authorize).headers["location"] for _ in range(how_many)]
            return [parse_qs(urlsplit(location).query)["code"][0] for location in locations]

        shares = [count // _MINT_THREADS + (n < count % _MINT_THREADS) for n in range(_MINT_THREADS)]
        with ThreadPoolExecutor(_MINT_THREADS) as pool:
            codes = [code for minted in pool.map(mint, shares) for code in minted]
        lines = [
            f"{CODE_CLIENT_AUTH}\t"
            + urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": CODE_REDIRECT})
            for code in codes
        ]
        return self._write("code-lines.txt", lines)

    def private_key_jwt_lines(self, url: str, count: int) -> Path:
        """`count` client_credentials requests of the backend service, each with an assertion of its own
        (a jti is accepted once, and this run's jtis are unlike any other run's), signed with RS384
        like a SMART backend service's: in a process per core, ~0.26 ms of CPU each."""
        audience = f"{url}/auth/token"
        exp = int(time.time()) + 240
        run = secrets.token_hex(6)
        workers = os.cpu_count() or 1
        shares = [range(n, count, workers) for n in range(workers)]
        key_file = self.data / PKJWT_KEY_FILE
        with ProcessPoolExecutor(workers) as pool:
            signed = pool.map(_assertion_lines, [(key_file, audience, exp, run, share) for share in shares])
            lines = [line for share in signed for line in share]
        return self._write("private-key-jwt-lines.txt", lines)

    def passkey_lines(self, url: str, count: int) -> Path:
        """`count` passkey step-up finishes (`POST /app/auth/two-factor/passkeys/authentication`), each
        with a challenge of its own, made over HTTP just now (a challenge lives 300 s and is taken once)
        and signed by the user's software authenticator. PASSKEY_USERS users of the dataset (taken once)
        each register one synced, counterless passkey (a counter would be refused when wrk's
        connections deliver two of one key's uses out of order); requests go round the users, so no two
        uses of one passkey are in flight together (that is refused too, by compare-and-set)."""
        if not self._passkeys:
            # All of them whatever --one-use-scale says: fewer would meet each other in flight.
            users = OAuthRuns._take(self, PASSKEY_USERS)
            with ThreadPoolExecutor(_MINT_THREADS) as pool:
                self._passkeys = list(pool.map(lambda user: _register_passkey(url, user["token"]), users))
        share = [self._passkeys[n % len(self._passkeys)] for n in range(count)]

        def mint(chunk: list[tuple[str, SoftKey]]) -> list[str]:
            lines = []
            with httpx2.Client(timeout=30.0) as client:
                for token, key in chunk:
                    answer = client.post(
                        f"{url}{PASSKEYS}/authentication/options", json={}, headers={"Authorization": token}
                    )
                    answer.raise_for_status()
                    credential = key.get(answer.json()["publicKey"])
                    lines.append(f"{token}\t{orjson.dumps({'credential': credential}).decode()}")
            return lines

        chunks = [share[n::_MINT_THREADS] for n in range(_MINT_THREADS)]
        with ThreadPoolExecutor(_MINT_THREADS) as pool:
            minted = list(pool.map(mint, chunks))
        # Back in round-robin order: consecutive lines are different users'.
        lines = [minted[n % _MINT_THREADS][n // _MINT_THREADS] for n in range(count)]
        return self._write("passkey-lines.txt", lines)

    def taken(self) -> int:
        """How many 2FA users the runs have used; the rest still have 2FA on and no code spent."""
        return self._next_user

    def _write(self, name: str, lines: list[str]) -> Path:
        path = self.data / name
        path.write_text("\n".join(lines) + "\n")
        return path
