"""What the soak sends: a weighted mix of CRUD, client_credentials tokens, introspection and password
sign-ins with a TOTP code, against the data `prepare` puts in place first."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx2

from fhirauth.twofactor import totp

CLIENT_ID = "soak"
CLIENT_SECRET = "soak-client-secret"
PASSWORD = "soak password of decent length"
READ_USERS = 200

# Relative weights of the operations in the mix.
WEIGHTS = {
    "read": 24,
    "search": 10,
    "create": 10,
    "update": 5,
    "delete": 5,
    "token": 15,
    "introspect": 20,
    "login_totp": 11,
}

# (operation, HTTP status or the name of the transport error, seconds)
Recorder = Callable[[str, int | str, float], None]


@dataclass
class TotpUser:
    email: str
    secret: str
    # The newest step whose code was spent: the server refuses a code at or before it (replay guard).
    last_step: int
    # Seconds into each 30 s step from which this user signs in, so sign-ins are spread over the step
    # instead of arriving as one burst when a new step frees every user at once.
    slot: float


@dataclass
class Pools:
    created: deque[str] = field(default_factory=lambda: deque(maxlen=500))
    tokens: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    totp_users: list[TotpUser] = field(default_factory=list)
    serial: int = 0


class SetupError(RuntimeError):
    """The data the soak needs could not be put in place; the message says which request failed."""


def _expect(response: httpx2.Response, *statuses: int) -> httpx2.Response:
    if response.status_code not in statuses:
        request = response.request
        raise SetupError(
            f"{request.method} {request.url.path} → {response.status_code}: {response.text[:300]}"
        )
    return response


async def prepare(root: httpx2.AsyncClient, plain: httpx2.AsyncClient, totp_users: int) -> Pools:
    """The soak client, READ_USERS plain users and `totp_users` users with 2FA enabled."""
    client = {
        "resourceType": "Client",
        # First-party: its users enrol through the JSON 2FA operations, which answer no other.
        "first_party": True,
        "secret": CLIENT_SECRET,
        "grant_types": ["client_credentials", "password"],
    }
    _expect(await root.put(f"/Client/{CLIENT_ID}", json=client), 200, 201)
    pools = Pools()
    gate = asyncio.Semaphore(8)

    async def plain_user(n: int) -> None:
        async with gate:
            user = {"resourceType": "User", "email": f"reader{n}@soak.example", "name": {"givenName": "R"}}
            _expect(await root.put(f"/User/reader{n}", json=user), 200, 201)

    async def two_factor_user(n: int) -> TotpUser:
        async with gate:
            email = f"totp{n}@soak.example"
            user = {"resourceType": "User", "email": email, "password": PASSWORD}
            _expect(await root.put(f"/User/totp{n}", json=user), 200, 201)
            grant = {"grant_type": "password", "username": email, "password": PASSWORD}
            signed_in = _expect(
                await plain.post("/auth/token", data=grant, auth=(CLIENT_ID, CLIENT_SECRET)), 200
            )
            bearer = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
            requested = _expect(
                await plain.post("/app/auth/two-factor/request", json={}, headers=bearer), 200
            )
            secret = parse_qs(urlsplit(requested.json()["uri"]).query)["secret"][0]
            step = totp.step_at(time.time())
            confirm = {"token": totp.code_at(secret, step)}
            _expect(await plain.post("/app/auth/two-factor/confirm", json=confirm, headers=bearer), 200)
            return TotpUser(email, secret, step, slot=n * totp.PERIOD / totp_users)

    await asyncio.gather(*(plain_user(n) for n in range(READ_USERS)))
    pools.totp_users = list(await asyncio.gather(*(two_factor_user(n) for n in range(totp_users))))
    return pools


class Workload:
    """One operation per `step()`, drawn by weight; each HTTP exchange goes to `record`."""

    def __init__(
        self, root: httpx2.AsyncClient, plain: httpx2.AsyncClient, pools: Pools, record: Recorder
    ) -> None:
        self._root = root
        self._plain = plain
        self._pools = pools
        self._record = record
        self._random = random.Random(7)
        self._operations: dict[str, Callable[[], Awaitable[None]]] = {
            "read": self._read,
            "search": self._search,
            "create": self._create,
            "update": self._update,
            "delete": self._delete,
            "token": self._token,
            "introspect": self._introspect,
            "login_totp": self._login_totp,
        }
        self._names = list(WEIGHTS)
        self._weights = [WEIGHTS[name] for name in self._names]

    async def step(self) -> None:
        name = self._random.choices(self._names, self._weights)[0]
        await self._operations[name]()

    async def _send(self, name: str, call: Awaitable[httpx2.Response]) -> httpx2.Response | None:
        started = time.perf_counter()
        try:
            response = await call
        except httpx2.TransportError as error:
            self._record(name, type(error).__name__, time.perf_counter() - started)
            return None
        self._record(name, response.status_code, time.perf_counter() - started)
        return response

    async def _read(self) -> None:
        await self._send("read", self._root.get(f"/User/reader{self._random.randrange(READ_USERS)}"))

    async def _search(self) -> None:
        email = f"reader{self._random.randrange(READ_USERS)}@soak.example"
        await self._send("search", self._root.get("/User", params={"email": email}))

    async def _create(self) -> None:
        self._pools.serial += 1
        user = {"resourceType": "User", "email": f"made{self._pools.serial}@soak.example"}
        response = await self._send("create", self._root.post("/User", json=user))
        if response is not None and response.status_code == 201:
            self._pools.created.append(response.json()["id"])

    async def _update(self) -> None:
        if not self._pools.created:
            return await self._create()
        id = self._random.choice(self._pools.created)
        user = {"resourceType": "User", "email": f"{id}@soak.example", "name": {"givenName": "Updated"}}
        await self._send("update", self._root.put(f"/User/{id}", json=user))

    async def _delete(self) -> None:
        if len(self._pools.created) < 50:
            return await self._create()
        await self._send("delete", self._root.delete(f"/User/{self._pools.created.popleft()}"))

    async def _token(self) -> None:
        form = {"grant_type": "client_credentials"}
        response = await self._send(
            "token", self._plain.post("/auth/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
        )
        if response is not None and response.status_code == 200:
            self._pools.tokens.append(response.json()["access_token"])

    async def _introspect(self) -> None:
        if not self._pools.tokens:
            return await self._token()
        form = {"token": self._random.choice(self._pools.tokens)}
        await self._send(
            "introspect", self._plain.post("/auth/introspect", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
        )

    async def _login_totp(self) -> None:
        now = time.time()
        step, into_step = totp.step_at(now), now % totp.PERIOD
        fresh = [u for u in self._pools.totp_users if u.last_step < step and u.slot <= into_step]
        if not fresh:
            # No user is due: a second code in the same step would be refused as a replay.
            return await self._read()
        user = self._random.choice(fresh)
        user.last_step = step
        form = {
            "grant_type": "password",
            "username": user.email,
            "password": PASSWORD,
            "totp": totp.code_at(user.secret, step),
        }
        await self._send(
            "login_totp", self._plain.post("/auth/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
        )
