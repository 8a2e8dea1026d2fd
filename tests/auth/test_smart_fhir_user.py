"""User.fhirUser (an Aidbox Reference) read as SMART's fhirUser claim, and the patient it makes a User."""

from __future__ import annotations

from typing import Any

import pytest

from fhirauth.auth.smart.fhir_user import FhirUser, fhir_user, patient_of


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"resourceType": "Patient", "id": "p1"}, FhirUser("Patient/p1", "Patient", "p1")),
        (
            {"resourceType": "Practitioner", "id": "d-1", "display": "Dr"},
            FhirUser("Practitioner/d-1", "Practitioner", "d-1"),
        ),
        (
            {"resourceType": "RelatedPerson", "id": "r.1"},
            FhirUser("RelatedPerson/r.1", "RelatedPerson", "r.1"),
        ),
    ],
)
def test_a_fhir_user_reads_as_its_claim(value: Any, expected: FhirUser) -> None:
    assert fhir_user({"fhirUser": value}) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        {"resourceType": "Observation", "id": "o1"},
        {"resourceType": "Patient"},
        {"resourceType": "Patient", "id": "has space"},
        # A string is refused on write (schemas/User.json): the compartment's search would miss it.
        "Patient/p1",
        "https://ehr.example/fhir/Patient/123",
        "Observation/o1",
        "Patient/",
        "Patient/p1/_history/2",
        "xPatient/p1",
        7,
    ],
)
def test_anything_else_is_no_fhir_user(value: Any) -> None:
    assert fhir_user({"fhirUser": value}) is None


def test_only_a_patient_makes_the_user_a_patient() -> None:
    assert patient_of({"fhirUser": {"resourceType": "Patient", "id": "123"}}) == "123"
    assert patient_of({"fhirUser": {"resourceType": "Practitioner", "id": "d1"}}) is None
    assert patient_of({}) is None
    assert patient_of("not a user") is None
