"""Every page a person sees, in Chromium, light, dark and with a custom accent: readable and themed.

One walk per theme visits login, signup (form, sent, confirm), consent, the 2FA settings with 2FA off
and on, enable, the recovery codes, the new-codes and disable forms, the code step at sign-in (with
its error), sign-out (both states) and the error page. On each it measures every control and every
piece of text:

* the WCAG 2.x contrast ratio of its text colour against its effective background (the first opaque
  background up its ancestors, translucent ones composited on the way) is at least 4.5:1, and a
  field's border stands out 3:1 from what surrounds it (WCAG 1.4.11);
* a control's own colours come from the theme's variables (so a theme stylesheet that sets them
  reaches every control), and a primary action is drawn in the accent;
* every <button> and <a class="button"> has the same box and type: one button style.

The dark theme is the browser's `prefers-color-scheme: dark`; the custom accent is a theme stylesheet
(AuthConfig.theme.styleUrl) served by Playwright from the unreachable http://127.0.0.1:9.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal
from urllib.parse import urlencode

import httpx2
import pytest
from playwright.sync_api import Browser, Page, Route, expect
from support.browser import screenshot
from support.server import ROOT_CLIENT_SECRET, LiveServer, LiveServerFactory

from fhirauth.twofactor import totp

PASSWORD = "correct horse battery staple"
CALLBACK = "http://127.0.0.1:9/cb"
STYLE_URL = "http://127.0.0.1:9/theme.css"
ACCENT = (122, 31, 162)
ACCENT_CSS = ":root { --accent: #7a1fa2; --accent-text: #ffffff; --accent-hover: #5e1580; }"
LINK = re.compile(r"(http://127\.0\.0\.1:\d+/auth/signup/confirm/[A-Za-z0-9.-]+\?token=[A-Za-z0-9._-]+)")
MIN_CONTRAST = 4.5
# WCAG 1.4.11: the boundary that shows where a field is, against what surrounds it.
MIN_BOUNDARY_CONTRAST = 3.0
# Two actions of one group are at most this far apart; spread across a card they are ~150px apart.
MAX_GAP = 16
WRONG = "That code did not work. Check the time on your phone and try the newest code."
# The colours a theme sets (fhirauth.css's :root); a control may use no other.
THEME_VARIABLES = [
    "--bg",
    "--card",
    "--text",
    "--muted",
    "--border",
    "--accent",
    "--accent-text",
    "--accent-hover",
    "--error-bg",
    "--error-text",
    "--info-bg",
    "--info-text",
    "--on-text",
    "--off-text",
    "--field-border",
]
BUTTON_BOX = [
    "fontSize",
    "fontWeight",
    "lineHeight",
    "paddingTop",
    "paddingRight",
    "paddingBottom",
    "paddingLeft",
    "borderTopWidth",
    "borderRadius",
]

Rgba = tuple[float, float, float, float]

# What the page reports for each control or text-bearing element: its colours, the background
# colours from itself up to <html>, and (for buttons) the properties that make up the button style.
_MEASURE = """([variables, box]) => {
  const root = getComputedStyle(document.documentElement);
  const theme = Object.fromEntries(variables.map(name => [name, root.getPropertyValue(name).trim()]));
  const controls = "button, a.button, input, select, textarea";
  const ownText = el => [...el.childNodes].some(n => n.nodeType === Node.TEXT_NODE && n.data.trim());
  const shown = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const items = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest("svg") || !shown(el)) continue;
    const control = el.matches(controls);
    if (!control && !ownText(el)) continue;
    const backgrounds = [];
    for (let node = el; node; node = node.parentElement) {
      backgrounds.push(getComputedStyle(node).backgroundColor);
    }
    const style = getComputedStyle(el);
    const label = (el.innerText || el.value || el.getAttribute("aria-label") || el.name || "").trim();
    items.push({
      what: `${el.tagName.toLowerCase()}${el.className ? "." + el.className.split(/\\s+/).join(".") : ""}`
        + ` "${label.slice(0, 40)}"`,
      control,
      button: el.matches("button, a.button"),
      field: el.matches("input, select, textarea"),
      primary: el.matches(".primary"),
      color: style.color,
      background: style.backgroundColor,
      border: style.borderTopWidth === "0px" ? null : style.borderTopColor,
      backgrounds,
      box: Object.fromEntries(box.map(name => [name, style[name]])),
    });
  }
  return {theme, items};
}"""


@dataclass(frozen=True)
class Theme:
    name: str
    color_scheme: Literal["light", "dark"]
    stylesheet: str | None = None


THEMES = [
    Theme("light", "light"),
    Theme("dark", "dark"),
    Theme("accent", "light", ACCENT_CSS),
]


@dataclass
class Findings:
    theme: Theme
    problems: list[str] = field(default_factory=list)
    button_styles: dict[tuple[tuple[str, str], ...], str] = field(default_factory=dict)
    pages: list[str] = field(default_factory=list)


def parse_colour(value: str) -> Rgba:
    """A computed colour ("rgb(1, 2, 3)", "rgba(1, 2, 3, 0.5)") or a theme variable ("#abc", "#aabbcc")."""
    value = value.strip()
    hex_colour = re.fullmatch(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})", value)
    if hex_colour:
        digits = hex_colour.group(1)
        if len(digits) == 3:
            digits = "".join(d * 2 for d in digits)
        return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16), 1.0)
    functional = re.fullmatch(r"rgba?\(\s*([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\s*\)", value)
    assert functional, f"unexpected colour {value!r}"
    red, green, blue, alpha = functional.groups()
    return (float(red), float(green), float(blue), float(alpha) if alpha is not None else 1.0)


def over(top: Rgba, bottom: Rgba) -> Rgba:
    """`top` composited over an opaque `bottom`."""
    alpha = top[3]
    return (
        top[0] * alpha + bottom[0] * (1 - alpha),
        top[1] * alpha + bottom[1] * (1 - alpha),
        top[2] * alpha + bottom[2] * (1 - alpha),
        1.0,
    )


def effective_background(backgrounds: list[str]) -> Rgba:
    """The colour behind an element: its ancestors' backgrounds, innermost first, composited down to the
    first opaque one (white, the canvas, when none is)."""
    layers: list[Rgba] = []
    for value in backgrounds:
        colour = parse_colour(value)
        if colour[3] > 0:
            layers.append(colour)
        if colour[3] >= 1:
            break
    result: Rgba = (255.0, 255.0, 255.0, 1.0)
    for layer in reversed(layers):
        result = over(layer, result)
    return result


def luminance(colour: Rgba) -> float:
    """WCAG 2.x relative luminance."""

    def channel(value: float) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(colour[0]) + 0.7152 * channel(colour[1]) + 0.0722 * channel(colour[2])


def contrast(text: Rgba, background: Rgba) -> float:
    lighter, darker = sorted((luminance(text), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_contrast_of_known_pairs() -> None:
    # WCAG's extremes, and a pair on each side of 4.5:1.
    assert contrast(parse_colour("#000"), parse_colour("#fff")) == pytest.approx(21.0)
    assert contrast(parse_colour("#777777"), parse_colour("#ffffff")) == pytest.approx(4.48, abs=0.01)
    assert contrast(parse_colour("#767676"), parse_colour("#ffffff")) == pytest.approx(4.54, abs=0.01)
    # Translucent layers composite down to the first opaque one.
    assert effective_background(["rgba(0, 0, 0, 0)", "rgba(0, 0, 0, 0.5)", "rgb(255, 255, 255)"]) == (
        127.5,
        127.5,
        127.5,
        1.0,
    )
    assert effective_background(["rgba(0, 0, 0, 0)"]) == (255.0, 255.0, 255.0, 1.0)


def check(page: Page, findings: Findings, name: str, *, themed: bool = True) -> None:
    """Measure the page as it is now; record what fails, with the page's name.

    `themed=False`: a page that loads nothing from elsewhere (/docs), so not the theme's stylesheet.
    """
    findings.pages.append(name)
    screenshot(page, f"contrast_{findings.theme.name}_{name}")
    measured: dict[str, Any] = page.evaluate(_MEASURE, [THEME_VARIABLES, BUTTON_BOX])
    theme = measured["theme"]
    missing = [variable for variable, value in theme.items() if not value]
    if missing:
        findings.problems.append(f"{name}: the theme does not define {missing}")
    palette = {parse_colour(value)[:3] for value in theme.values() if value}
    accent = parse_colour(theme["--accent"])[:3]
    if findings.theme.stylesheet is not None and themed:
        assert accent == ACCENT, f"{name}: the theme stylesheet's accent did not apply"
    for item in measured["items"]:
        where = f"{name}: {item['what']}"
        colour = parse_colour(item["color"])
        background = effective_background(item["backgrounds"])
        ratio = contrast(over(colour, background), background)
        if ratio < MIN_CONTRAST:
            findings.problems.append(f"{where}: contrast {ratio:.2f}:1 ({item['color']} on {background[:3]})")
        if not item["control"]:
            continue
        own_background = parse_colour(item["background"])
        border = parse_colour(item["border"]) if item["border"] else None
        used = [colour] + ([own_background] if own_background[3] > 0 else []) + ([border] if border else [])
        strangers = [c[:3] for c in used if c[:3] not in palette]
        if strangers:
            findings.problems.append(f"{where}: colours {strangers} are not the theme's")
        if item["primary"] and own_background[:3] != accent:
            findings.problems.append(f"{where}: a primary action on {own_background[:3]}, not the accent")
        if item["field"]:
            around = effective_background(item["backgrounds"][1:])
            edge = contrast(over(border, around), around) if border else 1.0
            if edge < MIN_BOUNDARY_CONTRAST:
                findings.problems.append(
                    f"{where}: its boundary contrasts {edge:.2f}:1 with what surrounds it"
                )
        if item["button"]:
            box = tuple(sorted(item["box"].items()))
            findings.button_styles.setdefault(box, where)


def record_grouping(page: Page, findings: Findings, name: str, actions: list[str]) -> None:
    """The actions sit side by side on one row, a button's gap apart (not spread across the card)."""
    boxes = {action: page.get_by_role("link", name=action, exact=True).bounding_box() for action in actions}
    for left, right in pairwise(actions):
        first, second = boxes[left], boxes[right]
        assert first is not None and second is not None
        gap = second["x"] - (first["x"] + first["width"])
        if abs(first["y"] - second["y"]) > 1 or not 0 <= gap <= MAX_GAP:
            findings.problems.append(
                f"{name}: {left!r} and {right!r} are not grouped (gap {gap:.0f}px, rows "
                f"{first['y']:.0f}/{second['y']:.0f})"
            )


def record_said_once(page: Page, findings: Findings, name: str, sentence: str) -> None:
    said = page.locator("main").inner_text().count(sentence)
    if said != 1:
        findings.problems.append(f"{name}: {sentence!r} appears {said} times")


def wrong_code(secret: str) -> str:
    step = totp.step_at(time.time())
    near = {totp.code_at(secret, s) for s in range(step - 3, step + 4)}
    return next(f"{n:06d}" for n in range(123456, 1_000_000) if f"{n:06d}" not in near)


@pytest.fixture(params=THEMES, ids=[theme.name for theme in THEMES])
def theme(request: pytest.FixtureRequest) -> Theme:
    chosen: Theme = request.param
    return chosen


@pytest.fixture
def server(live_server_factory: LiveServerFactory, theme: Theme) -> Iterator[LiveServer]:
    server = live_server_factory()
    config_theme = {"title": "ACME sign-in", "brand": "ACME"}
    if theme.stylesheet is not None:
        config_theme["styleUrl"] = STYLE_URL
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
        for path, body in {
            "/AuthConfig/app": {
                "resourceType": "AuthConfig",
                "theme": config_theme,
                # A webhook nobody answers: the code step shows its notice and its resend button.
                "twoFactor": {
                    "issuerName": "ACME",
                    "validPastTokensCount": 1,
                    "webhook": {"endpoint": "http://127.0.0.1:9/hook", "timeout": 1000},
                },
            },
            "/AidboxConfig/provider": {
                "resourceType": "AidboxConfig",
                "provider": {"default": "console", "console": {"type": "console"}},
            },
            "/Client/shop": {
                "resourceType": "Client",
                "name": "Shop",
                "secret": "shop-secret",
                "grant_types": ["authorization_code"],
                "auth": {"authorization_code": {"redirect_uri": CALLBACK}},
            },
            "/User/ann": {"resourceType": "User", "email": "ann@example.org", "password": PASSWORD},
        }.items():
            response = api.put(path, json=body)
            assert response.status_code in (200, 201), response.text
    yield server


@pytest.fixture
def themed_page(browser: Browser, theme: Theme) -> Iterator[Page]:
    context = browser.new_context(color_scheme=theme.color_scheme)
    page = context.new_page()

    def serve(route: Route) -> None:
        if route.request.url == STYLE_URL and theme.stylesheet is not None:
            route.fulfill(status=200, content_type="text/css", body=theme.stylesheet)
        else:
            route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>client</title>")

    page.route("http://127.0.0.1:9/**", serve)
    yield page
    context.close()


def sign_in(page: Page, server: LiveServer, password: str = PASSWORD) -> None:
    page.goto(f"{server.url}/auth/login")
    page.get_by_label("E-mail or username").fill("ann@example.org")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_every_page_is_readable_and_themed(server: LiveServer, themed_page: Page, theme: Theme) -> None:
    page = themed_page
    findings = Findings(theme)
    settings = f"{server.url}/auth/two-factor"

    # Signed out: sign-in and its error, sign-up and its two next pages, sign-out, an error page
    page.goto(f"{server.url}/auth/login")
    check(page, findings, "login")
    sign_in(page, server, password="not the password")
    expect(page.get_by_role("alert")).to_have_text("Wrong e-mail, username or password.")
    check(page, findings, "login_error")
    page.goto(f"{server.url}/auth/signup")
    check(page, findings, "signup")
    page.get_by_label("E-mail").fill("new@example.org")
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("heading")).to_have_text("Check your e-mail")
    check(page, findings, "signup_sent")
    [link] = LINK.findall(server.output())
    page.goto(link)
    expect(page.get_by_role("heading")).to_have_text("Choose a password")
    check(page, findings, "signup_confirm")
    page.goto(f"{server.url}/auth/logout")
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    check(page, findings, "signed_out")
    page.goto(f"{server.url}/auth/authorize?client_id=nobody")
    expect(page.get_by_role("heading")).to_have_text("This sign-in request is not valid")
    check(page, findings, "error")
    page.goto(f"{server.url}/docs")
    check(page, findings, "api_docs", themed=False)

    # Signed in with 2FA off: the settings, a consent, the setup (and its error), the recovery codes
    sign_in(page, server)
    expect(page).to_have_url(settings)
    check(page, findings, "settings_off")
    query = urlencode(
        {"response_type": "code", "client_id": "shop", "redirect_uri": CALLBACK, "scope": "openid"}
    )
    page.goto(f"{server.url}/auth/authorize?{query}")
    expect(page.get_by_role("heading")).to_have_text("Allow access?")
    check(page, findings, "consent")
    page.goto(settings)
    page.get_by_role("link", name="Enable").click()
    expect(page.get_by_role("heading")).to_have_text("Set up two-factor authentication")
    check(page, findings, "enable")
    page.get_by_label("Code from the app").fill(
        wrong_code(page.locator("#secret").inner_text().replace(" ", ""))
    )
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("alert")).to_have_text(WRONG)
    check(page, findings, "enable_error")
    secret = page.locator("#secret").inner_text().replace(" ", "")
    page.get_by_label("Code from the app").fill(totp.code_at(secret, totp.step_at(time.time())))
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("heading")).to_have_text("Save your recovery codes")
    check(page, findings, "recovery_codes")
    recovery = page.locator("#recovery-codes code").all_inner_texts()

    # 2FA on: the settings with its grouped actions, the new-codes and disable forms, sign-out
    page.get_by_role("link", name="I have saved them").click()
    expect(page.locator(".status")).to_contain_text("Two-factor authentication is on.")
    check(page, findings, "settings_on")
    record_grouping(page, findings, "settings_on", ["New recovery codes", "Disable"])
    page.get_by_role("link", name="New recovery codes").click()
    expect(page.get_by_role("heading")).to_have_text("New recovery codes")
    check(page, findings, "new_recovery_codes")
    page.goto(settings)
    page.get_by_role("link", name="Disable").click()
    expect(page.get_by_role("heading")).to_have_text("Turn off two-factor authentication")
    check(page, findings, "disable")
    page.goto(f"{server.url}/auth/logout")
    expect(page.get_by_role("heading")).to_have_text("Sign out")
    check(page, findings, "sign_out")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")

    # The code step at sign-in (its notice, its error, its resend button), then 2FA off again
    sign_in(page, server)
    expect(page).to_have_url(f"{server.url}/auth/two-factor/verify")
    expect(page.get_by_role("status")).to_have_text(
        "We could not send you a code; use your authenticator app."
    )
    check(page, findings, "verify")
    page.get_by_label("Code").fill(wrong_code(secret))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_have_text(WRONG)
    check(page, findings, "verify_error")
    page.get_by_label("Code").fill(recovery[0])
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(settings)
    page.get_by_role("link", name="Disable").click()
    page.get_by_label("Code from your authenticator app, or a recovery code").fill(recovery[1])
    page.get_by_role("button", name="Turn off").click()
    expect(page).to_have_url(f"{settings}?done=disabled")
    check(page, findings, "settings_disabled")
    record_said_once(page, findings, "settings_disabled", "Two-factor authentication is off")

    styles = "\n".join(f"  {dict(box)} first on {where}" for box, where in findings.button_styles.items())
    if len(findings.button_styles) != 1:
        findings.problems.append(f"{len(findings.button_styles)} button styles:\n{styles}")
    assert len(findings.pages) == 20
    assert not findings.problems, f"{theme.name} theme:\n" + "\n".join(findings.problems)
