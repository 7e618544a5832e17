"""The baseline for collect's single-message requests: uvicorn as Herald runs it (uvloop,
httptools with a response's writes coalesced, its proxy-headers middleware, no access
log), serving an ASGI app that reads each request's body and answers 202 with a body
shaped like collect's. No validation, no store, no bus: what one request costs a server
on this stack before it does anything.

    python bench/http_floor_server.py --port 9000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from herald.web.coalesced import CoalescedHttpToolsProtocol

ANSWER = b'{"messages":[{"id":"01JEXAMPLE0000000000000000","channel":"user:i0","offset":1,"online":false}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    status = 202 if scope["method"] == "POST" else 200
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        http=CoalescedHttpToolsProtocol,
        loop="uvloop",
        log_config=None,
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    sys.exit(main())
