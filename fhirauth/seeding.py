"""Loading Bundle files (JSON or YAML) at start-up or from the command line."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.progress import Progress

from fhirauth.errors import BadRequest, OutcomeError
from fhirauth.http.bodies import parse_document
from fhirauth.resources.bundles import BundleProcessor
from fhirauth.resources.structure import in_bundle_resources

log = logging.getLogger("fhirauth.seed")

PROGRESS_THRESHOLD = 1000
SEED_MAX_KEYS = 2**31
# How a backup carries a storage record (the signing keys, the recovery-code pepper): a Binary entry.
RECORD_CONTENT_TYPE = "application/vnd.fhirauth.storage-record+json"


class SeedError(Exception):
    """A seed file that cannot be loaded; the message names the file and the entry."""


def read_bundle(path: Path) -> Any:
    content_type = "text/yaml" if path.suffix.lower() in (".yaml", ".yml") else "application/json"
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise SeedError(f"{path}: {error.strerror}") from None
    try:
        # A seed file is the operator's own, and may hold a whole dataset: only the per-request
        # key budget is lifted; depth, NUL and `$` keys are judged as in any request.
        return parse_document(raw, content_type, max_keys=SEED_MAX_KEYS, dollar_keys=in_bundle_resources)
    except BadRequest as error:
        raise SeedError(f"{path}: {error.diagnostics}") from None


def is_record_entry(entry: Any) -> bool:
    resource = entry.get("resource") if isinstance(entry, dict) else None
    return (
        isinstance(resource, dict)
        and resource.get("resourceType") == "Binary"
        and resource.get("contentType") == RECORD_CONTENT_TYPE
    )


def carries_records(bundle: Any) -> bool:
    """Whether `bundle` is a backup from `fhirauth export`, with storage records beside its resources."""
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    return isinstance(entries, list) and any(is_record_entry(entry) for entry in entries)


async def seed_file(bundles: BundleProcessor, path: Path, *, show_progress: bool = False) -> dict[str, Any]:
    bundle = read_bundle(path)
    if carries_records(bundle):
        # Its signing keys and recovery-code pepper would be left behind: codes would stop matching.
        raise SeedError(f"{path}: a backup from `fhirauth export`; restore it with `fhirauth seed {path}`")
    return await seed_bundle(bundles, bundle, path, show_progress=show_progress)


async def seed_bundle(
    bundles: BundleProcessor, bundle: Any, path: Path, *, show_progress: bool = False
) -> dict[str, Any]:
    """Load a Bundle as the administrator: a seed file is the operator's own, so its entries are not
    judged by the access policies, and its Users may carry their two-factor state."""
    entries = bundle.get("entry", []) if isinstance(bundle, dict) else []
    try:
        if show_progress and isinstance(entries, list) and len(entries) >= PROGRESS_THRESHOLD:
            with Progress(transient=True) as progress:
                task = progress.add_task(f"Seeding {path.name}", total=len(entries))
                result = await bundles.process(
                    bundle, lambda n: progress.advance(task, n), administrator=True
                )
        else:
            result = await bundles.process(bundle, administrator=True)
    except OutcomeError as error:
        raise SeedError(f"{path}: {error.diagnostics}") from None
    failures = [
        (index, entry["response"])
        for index, entry in enumerate(result["entry"])
        if not entry["response"]["status"].startswith("2")
    ]
    if failures:
        index, response = failures[0]
        outcome = response.get("outcome", {}).get("issue", [{}])[0]
        raise SeedError(
            f"{path}: {len(failures)} entries failed; the first, entry[{index}], answered "
            f"{response['status']}: {outcome.get('diagnostics', '')}"
        )
    log.info("seeded %s: %d entries", path, len(result["entry"]))
    return result


async def seed_files(bundles: BundleProcessor, paths: Sequence[Path], *, show_progress: bool = False) -> None:
    for path in paths:
        await seed_file(bundles, path, show_progress=show_progress)
