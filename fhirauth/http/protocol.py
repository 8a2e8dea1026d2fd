"""The name docs/operations.md gives plain uvicorn for fhirauth's HTTP protocol
(`--http fhirauth.http.protocol:CoalescingHttpToolsProtocol`), kept for the deployments that use it.
The protocol itself is in serving/protocol.py."""

from fhirauth.http.serving.protocol import CoalescingHttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol"]
