"""Data a scenario runs against: a Bundle to seed and the request files bench/request.lua reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson
from oauth_data import OAuthDataset

# `fhirauth seed` reads a file through the same structural guard as a request body, which refuses a
# document of more than 10,000 properties (fhirauth/resources/structure.py MAX_KEYS): about 1,000 Users.
BUNDLE_USERS = 500


@dataclass(frozen=True)
class Dataset:
    """`users` Users (no passwords), each with a unique email, in transaction Bundles of BUNDLE_USERS."""

    name: str
    users: int

    @property
    def resources(self) -> int:
        return self.users

    def bundles(self, directory: Path) -> Sequence[Path]:
        return sorted(directory.glob("bundle-*.json"))

    def prepare(self, directory: Path) -> Path:
        """Write the bundles and the request files into `directory`; return the directory."""
        directory.mkdir(parents=True, exist_ok=True)
        entries = []
        user_paths, email_paths = [], []
        for n in range(1, self.users + 1):
            id, email = f"u{n:06d}", f"user{n}@bench.example"
            user = {
                "resourceType": "User",
                "email": email,
                "name": {"givenName": "Bench", "familyName": f"User {n}"},
            }
            entries.append({"request": {"method": "PUT", "url": f"/User/{id}"}, "resource": user})
            user_paths.append(f"/User/{id}")
            email_paths.append(f"/User?email={quote(email)}")
        for start in range(0, len(entries), BUNDLE_USERS):
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": entries[start : start + BUNDLE_USERS],
            }
            (directory / f"bundle-{start // BUNDLE_USERS:04d}.json").write_bytes(orjson.dumps(bundle))
        (directory / "user-paths.txt").write_text("\n".join(user_paths) + "\n")
        (directory / "email-paths.txt").write_text("\n".join(email_paths) + "\n")
        new_user = {"resourceType": "User", "name": {"givenName": "Posted", "familyName": "User"}}
        (directory / "new-user.json").write_bytes(orjson.dumps(new_user))
        return directory


DATASETS: dict[str, Dataset | OAuthDataset] = {
    "1k": Dataset("1k", 1_000),
    "100k": Dataset("100k", 100_000),
    # Enough one-use 2FA users for the runs of scenarios.PASSWORD_TOTP_CAP and DISABLE_CAP.
    "oauth": OAuthDataset("oauth", 160_000),
}
