"""The `fhirauth` command: serve, seed, and the administration commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from fhirauth import logs
from fhirauth.app import INDEXES, build_services
from fhirauth.auth.keys import ALGORITHMS, PUBLISH_AHEAD_SECONDS, RELOAD_SECONDS, VERIFIER_LEEWAY_SECONDS
from fhirauth.auth.tokens import longest_jwt_lifetime
from fhirauth.backup import export_bundle, restore_file
from fhirauth.clock import Clock, isoformat, system_clock
from fhirauth.migrations import Outcome, migrate_all, migrate_pending
from fhirauth.secret_rotation import rotate_secrets
from fhirauth.secretbox import SecretBoxError
from fhirauth.seeding import SeedError, seed_files
from fhirauth.services import Services
from fhirauth.settings import Settings
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Storage, StorageUnavailable
from fhirauth.twofactor.pepper import RecoveryPepper


async def _with_storage(settings: Settings, work: Callable[[Storage], Awaitable[None]]) -> None:
    storage = open_storage(settings.storage, system_clock)
    await storage.start(INDEXES)
    try:
        await work(storage)
    finally:
        await storage.close()


async def _with_services(settings: Settings, work: Callable[[Services], Awaitable[None]]) -> None:
    await _with_storage(settings, lambda storage: work(build_services(settings, storage, system_clock)))


def _run(settings: Settings, work: Callable[[Services], Awaitable[None]]) -> int:
    return _run_async(lambda: _with_services(settings, work))


def _run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    try:
        asyncio.run(main())
    except SeedError as error:
        print(f"fhirauth: seed failed: {error}", file=sys.stderr)
        return 1
    except StorageUnavailable as error:
        print(f"fhirauth: storage unavailable: {error}", file=sys.stderr)
        return 1
    return 0


def _print_outcomes(outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        total = outcome.converted + outcome.current + len(outcome.unreadable)
        line = f"{outcome.name}: {outcome.converted} of {total} {outcome.items} converted"
        if outcome.unreadable:
            line += f", {len(outcome.unreadable)} unreadable ({', '.join(outcome.unreadable)})"
        print(line, flush=True)


def _migrate(
    settings: Settings, migrate: Callable[[Storage, Clock], Awaitable[list[Outcome]]]
) -> list[Outcome] | None:
    """The outcomes, printed; None when storage could not be reached."""
    outcomes: list[Outcome] = []

    async def run(storage: Storage) -> None:
        outcomes.extend(await migrate(storage, system_clock))

    if _run_async(lambda: _with_storage(settings, run)):
        return None
    _print_outcomes(outcomes)
    return outcomes


def cmd_migrate(args: argparse.Namespace) -> int:
    outcomes = _migrate(Settings(), migrate_all)
    if outcomes is None:
        return 1
    if not all(outcome.complete for outcome in outcomes):
        print(
            "fhirauth: unreadable records were left as they were; fix or remove them and run again",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fhirauth.http.serving.protocol import serving_protocol

    settings = Settings()
    # Before any worker starts, so that none reads a layout older than its code. Unreachable storage
    # does not stop the server: it answers 503 until storage is back, as it always has.
    if _migrate(settings, migrate_pending) is None:
        print(
            "fhirauth: data migrations not run; run `fhirauth migrate` once storage is back", file=sys.stderr
        )
    seeds = [*settings.seed_files(), *(args.seed or [])]
    if args.workers > 1 and seeds:
        # Seed once before forking, so workers do not race each other over the same entries.
        code = _run(settings, lambda s: seed_files(s.bundles, [Path(p) for p in seeds], show_progress=True))
        if code:
            return code
        seeds = []
    os.environ["FHIRAUTH_SEED"] = ",".join(seeds)
    uvicorn.run(
        "fhirauth.app:create_served_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        access_log=args.access_log,
        log_config=logs.uvicorn_log_config(settings.log_level, settings.log_format),
        proxy_headers=settings.trust_proxy_headers,
        http=serving_protocol(settings.header_timeout_seconds, settings.body_timeout_seconds),
        # h11's bound on a request's line and headers, which fhirauth's httptools protocol applies too.
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    async def seed(services: Services) -> None:
        for path in args.files:
            await restore_file(services.bundles, services.box, Path(path), show_progress=True)

    settings = Settings()
    code = _run(settings, seed)
    if code == 0:
        print(f"seeded {len(args.files)} file(s) into {settings.storage}")
    return code


def cmd_export(args: argparse.Namespace) -> int:
    async def export(services: Services) -> None:
        bundle = await export_bundle(services.storage, services.clock)
        data = orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n"
        if args.output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            _write_private(Path(args.output), data)
        kinds = Counter(entry["resource"]["resourceType"] for entry in bundle["entry"])
        records = kinds.pop("Binary", 0)
        counts = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        print(
            f"exported {sum(kinds.values())} resources ({counts}) and {records} storage records"
            f" to {args.output or 'stdout'}",
            file=sys.stderr,
        )

    return _run(Settings(), export)


def _write_private(path: Path, data: bytes) -> None:
    # Readable by the owner only (it holds hashes and sealed secrets), and never half-written.
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


def cmd_two_factor_reset(args: argparse.Namespace) -> int:
    async def reset(services: Services) -> None:
        user = await services.logins.find_user(args.user)
        if user is None:
            raise UserNotFound(args.user)
        await services.twofactor.reset(user["id"], actor="cli")
        # The reset hooks (TwoFactorService.on_reset) remove the passkeys and trusted devices too.
        print(
            f"two-factor authentication is off for User/{user['id']}: its authenticator-app secret, "
            "passkeys and trusted devices are removed; the next enrolment makes a new secret"
        )

    try:
        return _run(Settings(), reset)
    except UserNotFound as missing:
        print(f"fhirauth: no user with id, e-mail or userName '{missing}'", file=sys.stderr)
        return 1


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    async def rotate(services: Services) -> None:
        retire_after: int | None = args.retire_after
        if retire_after is None:
            clients = await services.storage.all_resources("Client")
            retire_after = longest_jwt_lifetime(clients) + VERIFIER_LEEWAY_SECONDS
        for rotation in await services.keys.rotate(retire_after, tuple(args.alg or ALGORITHMS)):
            await services.audit.record(
                "signing-key-rotated",
                "success",
                detail={
                    "kid": rotation.kid,
                    "alg": rotation.alg,
                    "signsFrom": isoformat(rotation.signs_from),
                    "by": "cli",
                },
            )
            print(
                f"new signing key {rotation.kid}: {rotation.alg}, in the JWKS of every server within "
                f"{RELOAD_SECONDS} s, signs from {isoformat(rotation.signs_from)}"
            )
            for kid, retires in rotation.retiring.items():
                print(f"key {kid} signs until then and leaves the JWKS at {isoformat(retires)}")
            for kid in rotation.pruned:
                print(f"key {kid} had retired and was removed")

    return _run(Settings(), rotate)


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    async def rotate(services: Services) -> None:
        pepper = RecoveryPepper(services.storage, services.box)
        try:
            results = await rotate_secrets(services.resources, services.keys, pepper)
        except SecretBoxError as error:
            raise Incomplete(f"{error}; is its master secret in FHIRAUTH_PREVIOUS_SECRET_KEYS?") from None
        for result in results:
            line = f"{result.what}: {result.resealed} re-encrypted, {result.current} already current"
            if result.unreadable:
                line += f", {len(result.unreadable)} unreadable ({', '.join(result.unreadable)})"
            if result.changing:
                line += f", {len(result.changing)} kept changing ({', '.join(result.changing)})"
            print(line)
        complete = all(result.complete for result in results)
        await services.audit.record(
            "master-secret-rotated",
            "success" if complete else "failure",
            detail={
                "keyId": services.box.primary_kid,
                "reencrypted": sum(result.resealed for result in results),
                "by": "cli",
            },
        )
        if not complete:
            raise Incomplete(
                "some values are not under the new master secret yet; keep the old one and run again"
            )
        print(f"every stored secret is sealed under master secret key id {services.box.primary_kid}")

    try:
        return _run(Settings(), rotate)
    except Incomplete as error:
        print(f"fhirauth: {error}", file=sys.stderr)
        return 1


class Incomplete(Exception):
    pass


class UserNotFound(Exception):
    pass


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="fhirauth", description="An authorization server in Aidbox's dialect."
    )
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=os.environ.get("FHIRAUTH_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("FHIRAUTH_PORT", "8080")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("FHIRAUTH_WORKERS", "1")))
    serve.add_argument("--seed", action="append", metavar="FILE", help="load a Bundle file at start-up")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser(
        "migrate",
        help="convert data an earlier version stored to the current layout (serve runs it at start-up)",
        description=(
            "Runs every data migration. Idempotent, and safe beside running servers; `fhirauth serve` runs "
            "those never completed before its workers start. Run it again once the last worker of an "
            "earlier version has stopped. Exits 1 if anything was left unreadable."
        ),
    )
    migrate.set_defaults(run=cmd_migrate)

    seed = commands.add_parser("seed", help="load Bundle files (JSON or YAML) into storage")
    seed.add_argument("files", nargs="+", metavar="FILE")
    seed.set_defaults(run=cmd_seed)

    export = commands.add_parser(
        "export",
        help="write every resource, as stored, and the sealed signing keys and recovery-code pepper "
        "as one collection Bundle (JSON); restore it with `fhirauth seed FILE`",
    )
    export.add_argument("--output", "-o", metavar="FILE", help="write here (mode 0600) instead of stdout")
    export.set_defaults(run=cmd_export)

    two_factor = commands.add_parser("two-factor", help="two-factor administration")
    two_factor_commands = two_factor.add_subparsers(dest="action", required=True)
    reset = two_factor_commands.add_parser("reset", help="turn 2FA off for a user who lost the device")
    reset.add_argument("user", metavar="USER", help="the user's id, e-mail or userName")
    reset.set_defaults(run=cmd_two_factor_reset)

    keys = commands.add_parser("keys", help="JWT signing keys")
    keys_commands = keys.add_subparsers(dest="action", required=True)
    keys_rotate = keys_commands.add_parser(
        "rotate",
        help="add a new signing key for each algorithm; the old ones stay published until the tokens "
        "they signed expire",
        description=(
            f"The new key is published at once and signs {PUBLISH_AHEAD_SECONDS} s later, so that every "
            f"server (each re-reads the key set every {RELOAD_SECONDS} s) publishes it first."
        ),
    )
    keys_rotate.add_argument(
        "--retire-after",
        type=_non_negative,
        metavar="SECONDS",
        help="how long the replaced keys stay published after the new one starts signing (default: the "
        f"longest access-token lifetime of any JWT flow of any client, at least 3600, plus {VERIFIER_LEEWAY_SECONDS})",
    )
    keys_rotate.add_argument(
        "--alg",
        action="append",
        choices=ALGORITHMS,
        help="rotate this algorithm's keys only (repeatable; default: every algorithm's)",
    )
    keys_rotate.set_defaults(run=cmd_keys_rotate)

    secrets = commands.add_parser("secrets", help="the master secret")
    secrets_commands = secrets.add_subparsers(dest="action", required=True)
    secrets_rotate = secrets_commands.add_parser(
        "rotate",
        help="re-encrypt every stored secret under FHIRAUTH_SECRET_KEY",
        description=(
            "Re-encrypts the TOTP secrets, the signing keys' private parts and the recovery-code pepper "
            "sealed under a master secret from FHIRAUTH_PREVIOUS_SECRET_KEYS, while servers keep running. "
            "Idempotent; exits 1 if anything is left under an old master secret."
        ),
    )
    secrets_rotate.set_defaults(run=cmd_secrets_rotate)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
