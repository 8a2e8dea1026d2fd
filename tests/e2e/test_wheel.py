"""A plain (not editable) install of the wheel serves from an empty folder, as a new user would run it.

The wheel is built from a copy of what the Dockerfile's build stage copies (pyproject.toml, README.md,
fhirauth/, schemas/), with pip and build isolation as `pip install .` does. It is installed into a
fresh venv without its dependencies; those come from this test's own environment through a .pth
line, which adds that site-packages to the path without running its .pth files, so the editable
install of the checkout stays out of reach. Fast and offline, and fhirauth can only be imported from
the wheel (asserted below).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from support.server import REPO_ROOT, ServerError, free_port, wait_for_status

BUILD_INPUTS = ("pyproject.toml", "README.md", "fhirauth", "schemas")
SCHEMA_TYPES = sorted(path.stem for path in (REPO_ROOT / "schemas").glob("*.json"))


def _run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _plain_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FHIRAUTH_") and k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        origin = REPO_ROOT / name
        if origin.is_dir():
            # symlinks=True: fhirauth/schemas is a link to ../schemas, resolved inside the copy.
            shutil.copytree(
                origin, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(origin, source / name)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(source)])
    (built,) = dist.glob("fhirauth-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel; its bin/ directory."""
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            str(wheel),
        ]
    )
    fresh_site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    )
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root / "bin"


@contextlib.contextmanager
def serving(bin_dir: Path, workdir: Path, **settings: str) -> Iterator[str]:
    port = free_port()
    environment = {**_plain_environment(), "FHIRAUTH_STORAGE": "sqlite:///./x.db", **settings}
    with (workdir / "output.log").open("wb") as output:
        process = subprocess.Popen(
            [str(bin_dir / "fhirauth"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_status(f"{url}/health", (200,), 30.0, alive=process)
        except ServerError as error:
            raise ServerError(
                f"{error}\n--- server output ---\n{(workdir / 'output.log').read_text()}"
            ) from None
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def test_the_wheel_carries_every_schema_in_the_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = sorted(
            name.removeprefix("fhirauth/schemas/").removesuffix(".json")
            for name in archive.namelist()
            if name.startswith("fhirauth/schemas/")
        )
    assert shipped == SCHEMA_TYPES
    assert len(SCHEMA_TYPES) >= 9


def test_fhirauth_is_imported_from_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    found = _run(
        [str(installed / "python"), "-c", "import fhirauth; print(fhirauth.__file__)"],
        cwd=tmp_path,
        env=_plain_environment(),
    )
    assert Path(found.strip()).is_relative_to(installed.parent)


def test_fhirauth_serve_from_an_empty_folder_creates_and_reads_a_user(
    installed: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "empty"
    workdir.mkdir()
    with serving(installed, workdir) as url, httpx2.Client(base_url=url, auth=("root", "secret")) as client:
        created = client.post(
            "/User",
            json={"resourceType": "User", "email": "new@example.org", "password": "a long passphrase 42"},
        )
        assert created.status_code == 201, created.text
        user = created.json()
        assert user["email"] == "new@example.org"
        assert "password" not in user
        read = client.get(f"/User/{user['id']}")
        assert read.status_code == 200, read.text
        assert read.json() == user
    assert (workdir / "x.db").exists()


def test_fhirauth_schemas_dir_overrides_the_packaged_schemas(installed: Path, tmp_path: Path) -> None:
    custom = tmp_path / "schemas"
    shutil.copytree(REPO_ROOT / "schemas", custom)
    user = json.loads((custom / "User.json").read_text())
    user["properties"]["email"] = {"type": "string", "pattern": "@example[.]com$"}
    (custom / "User.json").write_text(json.dumps(user))
    workdir = tmp_path / "empty"
    workdir.mkdir()
    with (
        serving(installed, workdir, FHIRAUTH_SCHEMAS_DIR=str(custom)) as url,
        httpx2.Client(base_url=url, auth=("root", "secret")) as client,
    ):
        refused = client.post("/User", json={"resourceType": "User", "email": "new@example.org"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["issue"][0]["expression"] == ["User.email"]
        assert client.get("/User").json()["total"] == 0
        accepted = client.post("/User", json={"resourceType": "User", "email": "new@example.com"})
        assert accepted.status_code == 201, accepted.text
