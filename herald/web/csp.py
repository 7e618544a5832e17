"""Content-Security-Policy for the HTML Herald serves: the console, chat and ops pages of
push nodes, and the API docs of auth and collect.

A page may run only the scripts and styles it was shipped with: its inline ``<script>`` and
``<style>`` blocks are allowed by their SHA-256 (computed from the page as served, so a
page edited on disk stays allowed and nothing injected into it runs), external files only
from where the policy says. ``frame-ancestors 'none'`` keeps the pages out of other sites'
frames (clickjacking a console that holds an API key); ``base-uri`` and ``form-action``
stop an injected ``<base>`` or form from sending data elsewhere. Every response also
carries ``X-Content-Type-Options: nosniff`` (``SECURITY_HEADERS``): a JSON answer is never
run as a script or rendered as a page.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
# What old browsers without frame-ancestors understand.
FRAME_HEADERS: tuple[tuple[str, str], ...] = (("X-Frame-Options", "DENY"),)

_INLINE = re.compile(rb"<(script|style)\b([^>]*)>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)
_SRC = re.compile(rb"\bsrc\s*=", re.IGNORECASE)


def inline_hashes(page: bytes) -> dict[str, list[str]]:
    """``{"script": [...], "style": [...]}``: the CSP source of each inline block, in order."""
    found: dict[str, list[str]] = {"script": [], "style": []}
    for match in _INLINE.finditer(page):
        tag, attributes, content = match.group(1).lower().decode(), match.group(2), match.group(3)
        if tag == "script" and _SRC.search(attributes):
            continue  # an external script: allowed (or not) by its origin
        digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
        found[tag].append(f"'sha256-{digest}'")
    return found


def policy(directives: Mapping[str, str]) -> str:
    return "; ".join(f"{name} {value}".strip() for name, value in directives.items())


def for_page(page: bytes, connect_src: str) -> str:
    """A Herald page: its own scripts and styles only; ``connect_src`` where it may fetch
    and open WebSockets."""
    hashes = inline_hashes(page)
    return policy(
        {
            "default-src": "'none'",
            "script-src": " ".join(["'self'", *hashes["script"]]),
            "style-src": " ".join(hashes["style"]) or "'none'",
            "img-src": "'self' data:",
            "connect-src": connect_src,
            "base-uri": "'none'",
            "form-action": "'none'",
            "frame-ancestors": "'none'",
        }
    )


def for_api_docs(page: bytes) -> str:
    """FastAPI's Swagger UI and ReDoc pages: their bundles come from jsDelivr and their one
    inline script is allowed by its hash; their styles are set by script at run time, so
    style-src allows inline styles (no script can be added that way)."""
    return policy(
        {
            "default-src": "'none'",
            "script-src": " ".join(["'self'", "https://cdn.jsdelivr.net", *inline_hashes(page)["script"]]),
            "style-src": "'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com",
            "font-src": "https://fonts.gstatic.com",
            "img-src": "'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
            "connect-src": "'self'",
            "worker-src": "blob:",
            "base-uri": "'none'",
            "form-action": "'none'",
            "frame-ancestors": "'none'",
        }
    )
