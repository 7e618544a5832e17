"""Changes to websockets' sans-I/O ``ServerProtocol`` for a node that holds its sockets for
hours: the parsed request is let go once handed over, a finished protocol is left in no
reference cycle, and a request read without websockets' parser (``request_head``) has
the protocol go straight to frames. Each only touches the protocol's parser generator and
exceptions, the parts ``services.push.socket`` cannot reach through the public API.
"""

from __future__ import annotations

from websockets.protocol import Protocol as SansIOProtocol
from websockets.server import ServerProtocol


def forget_request(protocol: ServerProtocol) -> None:
    """Let the parsed HTTP request go once it is handed over, instead of for the connection's
    whole life.

    websockets' server parser (``ServerProtocol.parse``) parses the request into a local,
    then goes on as the frame parser in the same generator frame: the ``Request``, its
    headers and the token in its path stayed as long as the connection, about 2 KB of an
    idle connection's 7.4 (tracemalloc, 4,000 held). Right after the request is parsed,
    with no frame byte buffered (the client waits for the upgrade's answer, as RFC 6455
    asks), the frame parser is at the top of its loop with nothing of its own: a fresh one
    is the same parser without the request. With bytes buffered it is left alone.
    """
    reader = protocol.reader
    if reader.buffer or reader.eof:
        return
    read_frames(protocol)


def read_frames(protocol: ServerProtocol) -> None:
    """Put websockets' frame parser in place of its handshake parser: the request was read
    (``forget_request``) or will never be read by it (``services.push.request_head``)."""
    handshake_parser = protocol.parser
    protocol.parser = SansIOProtocol.parse(protocol)
    next(protocol.parser)  # start coroutine, as websockets does
    handshake_parser.close()


def unlink_protocol(protocol: ServerProtocol) -> None:
    """Break the reference cycles a finished ``ServerProtocol`` is left in, so reference
    counting frees it (and the HTTP request it parsed) the moment its socket goes.

    websockets' parser is a generator of the protocol's own (``protocol.parser``) whose
    frame holds ``self``, and, during the handshake, the ``Request`` with its headers and
    the token in its path; an abrupt end also leaves ``parser_exc`` (an ``EOFError``)
    whose traceback holds those frames; and the ``select_subprotocol`` callback is bound
    to the protocol as an attribute of its own. Each connection was therefore cyclic garbage,
    hundreds of objects that outlived the young collections of their 5-15 s life and
    waited for a full collection, which the node's thresholds (``GC_THRESHOLD``) make
    rare: under reconnect churn a push node grew by a few hundred KB a minute
    (tracemalloc: websockets/datastructures.py, http11.py, protocol.py, issue 18).

    Only called once the TCP connection is gone: the reader is at EOF, so the protocol
    never steps its parser again.
    """
    protocol.parser.close()
    getattr(protocol, "__dict__", {}).pop("select_subprotocol", None)
    seen: set[int] = set()  # a chain may loop back on itself
    for first in (protocol.parser_exc, protocol.handshake_exc):
        error: BaseException | None = first
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            error.__traceback__ = None
            error = error.__cause__ or error.__context__
