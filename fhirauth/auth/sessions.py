"""Sessions: one Session resource per issued access token and per browser sign-in (Aidbox's model).

Token values never reach storage: Session.access_token and refresh_token hold their SHA-256, so a
bearer token of any format (opaque, JWT, browser cookie) is found by one indexed lookup.

A refresh swaps a token Session's tokens in place, so the Session is the token family of RFC 9700
§4.14.2: the grant's tokens and all their rotations. Each refresh token it rotates away leaves a
record naming the Session, which is how a reused one finds the family to revoke.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.login import is_inactive
from fhirauth.auth.oidc.amr import SignInMethods
from fhirauth.auth.principal import Principal
from fhirauth.clock import Clock, isoformat
from fhirauth.errors import PreconditionFailed
from fhirauth.resources.service import ResourceService, new_id
from fhirauth.security import issued_token, token_hash
from fhirauth.storage.base import Filter, Found, Query, Stored

Document = dict[str, Any]

BROWSER = "browser"
# Longer values are refused before hashing: no token this server issues comes near it.
MAX_TOKEN_CHARS = 4096
_END_RETRIES = 5
_END_PAGE = 100
ROTATED_REFRESH_TOKEN_KIND = "rotated-refresh-token"
REUSE_DETECTION = timedelta(days=30)


class AlreadyRotated(Exception):
    """Another refresh has already taken this refresh token."""


def reference(resource_type: str, id: str) -> dict[str, str]:
    return {"resourceType": resource_type, "id": id}


def _digest(token: str) -> str | None:
    """The stored form of a presented token; None for one that no Session can hold."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    return token_hash(token)


def _ref_id(session: Document, field: str) -> str | None:
    ref = session.get(field)
    return ref.get("id") if isinstance(ref, dict) else None


def client_of(session: Document) -> str | None:
    """The id of the client a Session's tokens were issued to; None for a browser sign-in."""
    return _ref_id(session, "client")


def user_of(session: Document) -> str | None:
    return _ref_id(session, "user")


def signed_in_at(browser_session: Document) -> int:
    """When the user signed in to this browser Session (an ID token's auth_time), in epoch seconds.

    Sessions written before `auth_time` was recorded have their `start` only, which is the same moment.
    One with neither readable (an administrator's write, say) counts as signed in at the epoch: too
    long ago for any `max_age`.
    """
    auth_time = browser_session.get("auth_time")
    if isinstance(auth_time, int):
        return auth_time
    start = browser_session.get("start")
    try:
        return int(datetime.fromisoformat(start).timestamp()) if isinstance(start, str) else 0
    except ValueError:
        return 0


def sign_in_methods(browser_session: Document) -> SignInMethods:
    """How the user signed in to this browser Session. One stored before methods were recorded was
    made with a password (then maybe a code, which it cannot tell): a password sign-in."""
    stored = SignInMethods.from_dict(browser_session.get("amr_times"))
    return stored if stored is not None else SignInMethods.password(signed_in_at(browser_session))


class SessionService:
    def __init__(self, resources: ResourceService, clients: ClientRegistry, clock: Clock) -> None:
        self._resources = resources
        self._clients = clients
        self._clock = clock
        resources.on_change("User", self._after_user_change)

    async def _after_user_change(self, before: Document | None, after: Document | None) -> None:
        """A deleted User's Sessions end, so her tokens stay dead if a User is created with her id.

        Ended here, on the delete, rather than judged by the User's createdAt at each use: a restore
        from backup re-creates Users and Sessions alike, at the restore time and Sessions first, and
        its tokens must be live again; and a host whose clock lags would refuse brand-new tokens."""
        if before is not None and after is None:
            await self._end_all(Filter("user.id", (before["id"],)))

    def now(self) -> int:
        return int(self._clock().timestamp())

    async def create(self, session: Document) -> Document:
        return await self._resources.create_internal("Session", session)

    async def replace(self, session: Document, expected_version: int) -> Document | None:
        """Compare-and-set: the new Session, or None when someone else changed it first."""
        try:
            return await self._resources.save(session, expected_version)
        except PreconditionFailed:
            return None

    async def rotate(self, session: Document, refreshed: Document) -> Document | None:
        """Swap in a Session's refreshed tokens; None when the Session changed meanwhile (ended, say).

        Raises AlreadyRotated when another refresh took the same refresh token: the record of the
        token being rotated away is written first and only once, so of two refreshes racing with
        one token exactly one gets past it, and a reuse read after it finds the record.
        """
        storage = self._resources.storage
        key = session["refresh_token"]
        exp = session.get("refresh_token_exp")
        # Past its own expiry a rotated token is refused as expired anyway. One that never expires
        # is watched for REUSE_DETECTION: a record per refresh kept for ever would grow without end.
        expires_at = (
            datetime.fromtimestamp(exp, UTC) if isinstance(exp, int) else self._clock() + REUSE_DETECTION
        )
        record = {"session": session["id"]}
        taken = await storage.record_put(
            ROTATED_REFRESH_TOKEN_KIND, key, record, expected_rev=None, expires_at=expires_at
        )
        if taken is None:
            raise AlreadyRotated
        replaced = await self.replace(refreshed, int(session["meta"]["versionId"]))
        if replaced is None:
            # Nothing was rotated: the Session still holds this token, so presenting it again is no reuse.
            await storage.record_delete(ROTATED_REFRESH_TOKEN_KIND, key)
        return replaced

    async def rotated_from(self, refresh_token: str) -> str | None:
        """The id of the Session a rotated-away refresh token belonged to; None for any other token."""
        digest = _digest(refresh_token)
        if digest is None:
            return None
        record = await self._resources.storage.record_get(ROTATED_REFRESH_TOKEN_KIND, digest)
        session_id = record.document.get("session") if record is not None else None
        return session_id if isinstance(session_id, str) else None

    async def create_browser_session(
        self,
        user: Document,
        *,
        max_age: int,
        ip: str | None,
        methods: SignInMethods | None = None,
        trusted_device: Document | None = None,
    ) -> tuple[str, Document]:
        """A new sign-in made with `methods` (a password, just now, when not given): the cookie token
        (returned once, stored as its hash) and its Session. `trusted_device`: the device that stood
        in for the second factor, recorded beside the methods (which it does not add to)."""
        token = issued_token()
        now = self._clock()
        if methods is None:
            methods = SignInMethods.password(int(now.timestamp()))
        session: Document = {
            "resourceType": "Session",
            "id": new_id(),
            "type": BROWSER,
            "active": True,
            "start": isoformat(now),
            **methods.session_fields(),
            "exp": int(now.timestamp()) + max_age,
            "user": reference("User", user["id"]),
            "access_token": token_hash(token),
        }
        if ip:
            session["ip"] = ip
        if trusted_device is not None:
            session["trustedDevice"] = trusted_device
        return token, await self.create(session)

    async def step_up(self, browser_session: Document, methods: SignInMethods) -> tuple[str, Document] | None:
        """The same sign-in (its Session id, the ID tokens' sid, and the tokens it issued) made with
        more `methods`, under a new cookie token: the one from before the step-up stops working, as a
        cookie does at any sign-in. None when the Session changed meanwhile (ended, say)."""
        token = issued_token()
        raised = {**browser_session, **methods.session_fields(), "access_token": token_hash(token)}
        replaced = await self.replace(raised, int(browser_session["meta"]["versionId"]))
        return (token, replaced) if replaced is not None else None

    async def find(self, session_id: str) -> Document | None:
        stored = await self._resources.find("Session", session_id)
        return stored.document if stored is not None and not stored.deleted else None

    async def _find(self, field: str, token: str) -> Document | None:
        found = await self._lookup(field, _digest(token), with_user=False)
        return found.document if found is not None else None

    async def _lookup(self, field: str, digest: str | None, *, with_user: bool) -> Found | None:
        """The Session whose `field` holds `digest`; None for a token no Session can hold (no digest)."""
        if digest is None:
            return None
        follow = "user" if with_user else None
        return await self._resources.storage.find_one("Session", field, digest, follow=follow)

    async def find_by_access_token(self, token: str) -> Document | None:
        """The Session of an access token (or browser cookie token), live or not."""
        return await self._find("access_token", token)

    async def find_by_refresh_token(self, token: str) -> Document | None:
        return await self._find("refresh_token", token)

    def is_live(self, session: Document) -> bool:
        """Active and not expired. A Session without `exp` never expires (Aidbox)."""
        exp = session.get("exp")
        return session.get("active") is True and (not isinstance(exp, int) or exp > self.now())

    async def resolve(self, token: str) -> Principal | None:
        """Who a bearer token (opaque, JWT or browser cookie token) speaks for; None if nobody."""
        found = await self._lookup("access_token", _digest(token), with_user=True)
        if found is None or not self.is_live(found.document):
            return None
        return await self.principal(found.document, user=found.referenced)

    async def principal(self, session: Document, *, user: Stored | None = None) -> Principal | None:
        """The caller behind a Session; None when its client or user is gone or inactive. `user` is
        the Session's User when the caller has just read it with the Session."""
        client: Document | None = None
        client_id = _ref_id(session, "client")
        if client_id is not None:
            client = await self._clients.get(client_id)
            if client is None:
                return None
        user_id = _ref_id(session, "user")
        if user_id is not None:
            if user is None or user.document.get("resourceType") != "User":
                user = await self._resources.find("User", user_id)
            if user is None or user.deleted or is_inactive(user.document):
                return None
            return Principal("user", client=client, user=user.document, session=session)
        if client_id is None:
            return None
        if client_id == self._clients.root_id:
            return Principal("root", client=client, session=session)
        return Principal("client", client=client, session=session)

    async def end(self, session: Document) -> None:
        """End a Session (DELETE /Session, logout, revocation) and the sessions it produced."""
        current: Document | None = session
        for _ in range(_END_RETRIES):
            if current is None or current.get("active") is not True:
                break
            ended = {**current, "active": False, "end": isoformat(self._clock())}
            if await self.replace(ended, int(current["meta"]["versionId"])) is not None:
                break
            stored = await self._resources.find("Session", session["id"])
            current = stored.document if stored is not None else None
        await self._end_all(Filter("parent.id", (session["id"],)))

    async def sign_out(self, principal: Principal) -> None:
        """DELETE /Session: end the caller's session. A first-party client shares the browser sign-in
        its token came from (Aidbox's `first_party`), so that sign-in ends too and the next
        /auth/authorize asks for the password (and second factor) again."""
        assert principal.session is not None
        await self.end(principal.session)
        parent_id = _ref_id(principal.session, "parent")
        if (
            parent_id is not None
            and principal.client is not None
            and principal.client.get("first_party") is True
        ):
            await self.end_by_id(parent_id)

    async def find_by_token(
        self, token: str, hint: str | None, *, with_user: bool = False
    ) -> tuple[str, Found] | None:
        """The Session holding `token` as its access or refresh token (and its User, if asked for),
        with the field that holds it; `hint` says which to try first."""
        digest = _digest(token)
        if digest is None:
            return None
        fields = (
            ("refresh_token", "access_token")
            if hint == "refresh_token"
            else ("access_token", "refresh_token")
        )
        for field in fields:
            found = await self._lookup(field, digest, with_user=with_user)
            if found is not None:
                return field, found
        return None

    def held_by(self, session: Document, client: Document) -> bool:
        """Whether `client` holds the Session's tokens: they were issued to it, or it is the root client."""
        client_id: str = client["id"]
        return client_id == self._clients.root_id or client_of(session) == client_id

    async def revoke(self, token: str, hint: str | None, client: Document) -> None:
        """RFC 7009: end the Session of an access or refresh token `client` holds. Unknown tokens and
        other clients' tokens are ignored, as §2.1 and §2.2 ask."""
        held = await self.find_by_token(token, hint)
        if held is None:
            return
        session = held[1].document
        if self.held_by(session, client):
            await self.end(session)

    async def end_by_id(self, session_id: str) -> Document | None:
        """End the Session (and the sessions it produced); the Session as it was found, if it exists."""
        stored = await self._resources.find("Session", session_id)
        if stored is None:
            return None
        await self.end(stored.document)
        return stored.document

    async def _end_all(self, matching: Filter) -> None:
        """End every live Session `matching` says (each with the sessions it produced)."""
        query = Query(filters=(matching, Filter("active", (True,))), limit=_END_PAGE, count_total=False)
        while True:
            page = await self._resources.storage.search("Session", query)
            for session in page.items:
                await self.end(session)
            if len(page.items) < _END_PAGE:
                return
