"""A single-page relying party for the browser tests: static pages on their own loopback port that
drive oidc-client-ts (the npm package scripts/bootstrap --test installs into tests/e2e/node_modules)
against a live fhirauth.

Each page loads the library (global `oidc`) and /config.js, which makes `window.mgr`, a UserManager
for the registered client. The callback pages put their outcome in `window.outcome` and the title
("signed in", "signed out" or "error"), so a test waits for the title and reads the outcome.
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from support.server import free_port

LIBRARY = Path(__file__).resolve().parent / "node_modules" / "oidc-client-ts" / "dist" / "browser"

_HEAD = '<!doctype html><meta charset="utf-8"><script src="/oidc-client-ts.min.js"></script><script src="/config.js"></script>'
_REPORT = """<script>
{call}.then(
  (value) => {{ window.outcome = value ? JSON.parse(JSON.stringify(value)) : null; document.title = "{done}"; }},
  (error) => {{ window.outcome = {{error: error.error || String(error), message: String(error)}}; document.title = "error"; }},
);
</script>"""
PAGES = {
    "index.html": f"{_HEAD}<title>rp</title><p>relying party</p>",
    "callback.html": _HEAD
    + "<title>callback</title>"
    + _REPORT.format(call="mgr.signinRedirectCallback()", done="signed in"),
    "silent.html": _HEAD + "<title>silent</title><script>mgr.signinSilentCallback();</script>",
    "signed-out.html": _HEAD
    + "<title>bye</title>"
    + _REPORT.format(call="mgr.signoutRedirectCallback()", done="signed out"),
}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class RelyingParty:
    origin: str
    client_id: str

    def url(self, page: str) -> str:
        return f"{self.origin}/{page}"

    @property
    def callback(self) -> str:
        return self.url("callback.html")

    @property
    def silent(self) -> str:
        return self.url("silent.html")

    @property
    def signed_out(self) -> str:
        return self.url("signed-out.html")


@contextmanager
def relying_party(root: Path, authority: str, client_id: str, **settings: Any) -> Iterator[RelyingParty]:
    """Serve the pages from `root` on a free loopback port; `settings` add to the UserManager's."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(LIBRARY / "oidc-client-ts.min.js", root / "oidc-client-ts.min.js")
    port = free_port()
    rp = RelyingParty(f"http://127.0.0.1:{port}", client_id)
    config = {
        "authority": authority,
        "client_id": client_id,
        "redirect_uri": rp.callback,
        "silent_redirect_uri": rp.silent,
        "post_logout_redirect_uri": rp.signed_out,
        "response_type": "code",
        "automaticSilentRenew": False,
        **settings,
    }
    (root / "config.js").write_text(
        f"window.mgr = new oidc.UserManager({{...{json.dumps(config)}, "
        "userStore: new oidc.WebStorageStateStore({store: window.localStorage})});\n"
    )
    for name, text in PAGES.items():
        (root / name).write_text(text)
    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rp
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
