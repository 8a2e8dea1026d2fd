"""Reading an HTML form body: size-limited, text fields only, first value of each name."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from fhirauth.errors import PayloadTooLarge
from fhirauth.http.bodies import media_type
from fhirauth.http.serving.body import read_bytes

MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 32

Form = dict[str, str]


class BadForm(Exception):
    """Not a form we accept; `status` is what the page answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def read_form(request: Request) -> Form:
    content_type = media_type(request)
    if content_type == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(
                await read_urlencoded(request),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=MAX_FORM_FIELDS,
            )
        except ValueError:
            raise BadForm("The form could not be read.") from None
        return _first_values(pairs)
    if content_type == "multipart/form-data":
        return await _read_multipart(request)
    if content_type == "" and not await _has_body(request):
        return {}
    raise BadForm("Expected an HTML form.", 415)


async def read_urlencoded(request: Request) -> str:
    """An urlencoded body as the text it is, for a caller that reads it as a query string."""
    if media_type(request) != "application/x-www-form-urlencoded":
        raise BadForm("Expected an HTML form.", 415)
    try:
        return (await read_bytes(request, MAX_FORM_BYTES)).decode("utf-8")
    except PayloadTooLarge:
        raise BadForm("The form is too large.", 413) from None
    except UnicodeDecodeError:
        raise BadForm("The form could not be read.") from None


async def _has_body(request: Request) -> bool:
    try:
        return bool(await read_bytes(request, MAX_FORM_BYTES))
    except PayloadTooLarge:
        return True


async def _read_multipart(request: Request) -> Form:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise BadForm("The form is too large.", 413)
    try:
        async with request.form(
            max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_BYTES
        ) as form:
            pairs: list[tuple[str, str]] = []
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    raise BadForm("Files are not accepted here.")
                pairs.append((name, value))
    except HTTPException as error:
        raise BadForm(f"The form could not be read: {error.detail}") from None
    except MultiPartException as error:
        raise BadForm(f"The form could not be read: {error.message}") from None
    return _first_values(pairs)


def _first_values(pairs: list[tuple[str, str]]) -> Form:
    form: Form = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form
