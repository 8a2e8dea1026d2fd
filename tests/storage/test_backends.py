from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fhirauth.clock import ManualClock
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Create, Stored
from fhirauth.storage.mongo import MongoStorage
from fhirauth.storage.sqlite import SQLiteStorage

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:///./fhirauth.db", "./fhirauth.db"),
        ("sqlite:///fhirauth.db", "fhirauth.db"),
        ("sqlite:////var/lib/fhirauth/fhirauth.db", "/var/lib/fhirauth/fhirauth.db"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    storage = open_storage(url, ManualClock())
    assert isinstance(storage, SQLiteStorage)
    assert storage.path == path


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("mongodb://127.0.0.1:27017/clinic", "clinic"),
        ("mongodb://user:pw@db1:27017,db2:27017/clinic?replicaSet=rs0", "clinic"),
        ("mongodb://127.0.0.1:27017/", "fhirauth"),
        ("mongodb://127.0.0.1:27017", "fhirauth"),
    ],
)
async def test_mongo_urls_name_the_database(url: str, database: str) -> None:
    storage = open_storage(url, ManualClock())
    assert isinstance(storage, MongoStorage)
    assert storage.database_name == database
    await storage.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://admin:hunter2@db/fhirauth", "Unsupported storage URL scheme 'postgresql'"),
        ("fhirauth.db", "Storage URL needs a scheme"),
        ("sqlite://fhirauth.db", "SQLite URLs look like"),
        ("sqlite:///", "SQLite URLs look like"),
    ],
)
def test_bad_urls_are_refused_without_echoing_credentials(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        open_storage(url, ManualClock())
    assert "hunter2" not in str(caught.value)


async def test_a_relative_sqlite_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = open_storage("sqlite:///./relative.db", ManualClock())
    await storage.start(())
    await storage.write([Create({"resourceType": "User", "id": "u1", "meta": {"versionId": "1"}})])
    await storage.close()
    reopened = open_storage(f"sqlite:///{tmp_path / 'relative.db'}", ManualClock())
    await reopened.start(())
    assert await reopened.get("User", "u1") == Stored(
        {"resourceType": "User", "id": "u1", "meta": {"versionId": "1"}}
    )
    await reopened.close()


def test_sqlite_users_never_import_pymongo() -> None:
    program = (
        "import sys; from fhirauth.clock import system_clock; "
        "from fhirauth.storage.backends import open_storage; "
        "open_storage('sqlite://:memory:', system_clock); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('pymongo', 'bson')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
