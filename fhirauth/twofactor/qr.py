"""QR codes as inline SVG: no image library, embeddable straight into an HTML page."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import qrcode  # type: ignore[import-untyped]  # qrcode ships no type information
from qrcode.image.svg import SvgPathFillImage  # type: ignore[import-untyped]  # qrcode ships no type information

DEFAULT_LABEL = "QR code for your authenticator app"
_PIXELS_PER_MODULE = 5


def qr_svg(data: str, *, label: str = DEFAULT_LABEL) -> str:
    """An `<svg>` element (no XML declaration) with a viewBox, `role="img"` and `aria-label`."""
    # A white background keeps the code readable on a dark page: scanners need dark-on-light
    # modules and a light quiet zone.
    image = qrcode.make(data, image_factory=SvgPathFillImage, border=4)
    svg = image.get_image()
    modules = (image.width + 2 * image.border) * _PIXELS_PER_MODULE
    svg.set("width", str(modules))
    svg.set("height", str(modules))
    # Scaled by a fraction, adjacent module squares would otherwise show hairline seams.
    svg.set("shape-rendering", "crispEdges")
    svg.set("role", "img")
    svg.set("aria-label", label)
    # The path carries a fixed id; two codes on one page would share it.
    for path in svg.iter("path"):
        path.attrib.pop("id", None)
    return ET.tostring(svg, encoding="unicode")
