from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from fhirauth.twofactor.qr import DEFAULT_LABEL, qr_svg
from fhirauth.twofactor.uri import provisioning_uri

SVG = "{http://www.w3.org/2000/svg}svg"


def test_svg_is_an_accessible_embeddable_element() -> None:
    svg = qr_svg("otpauth://totp/fhirauth:alice?secret=JBSWY3DPEHPK3PXP&issuer=fhirauth")
    assert svg.startswith("<svg ")
    root = ET.fromstring(svg)
    assert root.tag == SVG
    assert root.get("role") == "img"
    assert root.get("aria-label") == DEFAULT_LABEL
    # 78 bytes at error-correction level M need version 5: 37 modules plus a 4-module quiet zone.
    assert root.get("viewBox") == "0 0 45 45"
    assert (root.get("width"), root.get("height")) == ("225", "225")


def test_label_is_escaped() -> None:
    root = ET.fromstring(qr_svg("x", label='Scan "me" <now> & go'))
    assert root.get("aria-label") == 'Scan "me" <now> & go'


def test_no_fixed_element_id() -> None:
    assert " id=" not in qr_svg("x")


def test_rendered_svg_scans_back_to_the_exact_uri(tmp_path: Path) -> None:
    uris = [
        provisioning_uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "alice+x@example.org", "ACME Co & Sons"),
        provisioning_uri("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "jürgen:1@beispiel.de", "Zürich: Spital"),
    ]
    # A black page: the code must carry its own light background and quiet zone to scan at all.
    page = tmp_path / "qr.html"
    page.write_text(
        '<!doctype html><meta charset="utf-8"><body style="margin:24px;background:#000">'
        + '<div style="height:24px"></div>'.join(qr_svg(uri) for uri in uris)
        + "</body>"
    )
    screenshot = tmp_path / "qr.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=420,700",
            f"--screenshot={screenshot}",
            page.as_uri(),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    scanned = subprocess.run(
        ["zbarimg", "--raw", "-q", str(screenshot)], capture_output=True, text=True, check=True
    )
    assert sorted(scanned.stdout.splitlines()) == sorted(uris)
