"""What the benchmark measures, as one table. A new scenario (the token endpoint, say) is one more row,
plus a dataset in datasets.py if it needs other data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MINIMAL = "minimal app: GET /User/{id}"


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
    server: Literal["minimal", "fhirauth"]
    dataset: str
    method: str = "GET"
    path: str = "/"
    # A file of the dataset with one request path per line; each request takes a random one.
    paths: str | None = None
    # A file of the dataset sent as the body of every request.
    body: str | None = None
    content_type: str = "application/json"
    goal: AtLeast | None = None

    def script_args(self, data: Path) -> list[str]:
        args = [f"method={self.method}"]
        if self.paths:
            args.append(f"paths={data / self.paths}")
        if self.body:
            args += [f"body={data / self.body}", f"type={self.content_type}"]
        return args


# Run in this order. Consecutive scenarios of one (server, dataset) share one freshly seeded store
# (each gets a fresh server process), so writes come last in their group.
SCENARIOS = (
    Scenario(MINIMAL, "minimal", "1k", paths="user-paths.txt"),
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
)

# Seeding the dataset with `fhirauth seed`, and the server's memory after its scenarios.
SEED_GOAL_PER_SECOND = 5_000
RSS_GOAL_MB = 250
MEASURED_DATASET = "100k"
