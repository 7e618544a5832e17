"""Wire a push node: its WebSocket server, its bus queue, its heartbeat."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from herald.adapters import Adapters
from herald.core.errors import Unavailable
from herald.core.settings import Settings
from herald.messaging.accept import Acceptor, Limits
from herald.messaging.appconfig import AppConfigs
from herald.messaging.egress import PublicOnly
from herald.messaging.ratelimit import MessageRate
from herald.ops.runtime import Part, nothing
from herald.services.push.demo import DemoBackend
from herald.services.push.gate import GateLimits
from herald.services.push.introspect import TokenChecker
from herald.services.push.node import PushNode
from herald.services.push.ops_page import OpsSnapshots
from herald.services.push.publish import ClientPublishing, PublishHook
from herald.services.push.server import ConnectLimits, ConsoleConfig, PushServer


def build(
    settings: Settings,
    adapters: Adapters,
    demo_app: Callable[[], Mapping[str, str]] | None = None,
    console_urls: Mapping[str, str] | None = None,
) -> list[Part]:
    """``demo_app`` (standalone only) gives the demo app's id and key: the node then serves the
    chat page's token and presence endpoints for it (``services.push.demo``). ``console_urls``
    (``auth_url``, ``collect_url``) tell the console page where auth and collect are; by
    default, on the page's own origin (a cluster behind nginx)."""
    bus, directory, store = adapters.bus, adapters.directory, adapters.store
    assert bus is not None and directory is not None and store is not None
    node = PushNode(settings.node_id, bus, directory, store, settings.heartbeat_s)
    checker = TokenChecker(settings.auth_url, settings.service_token)
    configs = AppConfigs(store)
    hook = _publish_hook(settings)
    publishing = ClientPublishing(
        Acceptor(store, bus),
        configs,
        hook,
        Limits(settings.max_payload, settings.max_batch, settings.message_ttl_s),
        MessageRate(configs, directory, settings.rate_per_s),
    )

    async def consuming() -> None:
        if not bus.consuming():
            raise Unavailable("this node's queue has no consumer", code="not_consuming")

    server = PushServer(
        node,
        checker,
        configs,
        ConnectLimits(settings.max_connections_per_user, settings.client_frames_per_s),
        settings.host,
        settings.port,
        settings.heartbeat_s,
        settings.drain_s,
        publishing,
        readiness=[directory.ping, bus.ping, consuming],
        demo=None if demo_app is None else DemoBackend(store, directory, bus, demo_app, public=settings.demo_public),
        reuse_port=settings.reuse_port,
        console=ConsoleConfig(**(console_urls or {})),
        ops=OpsSnapshots(settings.node_id, directory, bus, store, settings.admin_token),
        gate=GateLimits(
            settings.handshake_timeout_s,
            settings.max_handshakes,
            settings.max_handshakes_per_address,
            settings.max_connections,
        ),
    )
    return [
        Part("token-checker", nothing, checker.close),
        Part("publish-hook", nothing, hook.close),
        Part("push-node", node.start, node.stop),
        Part("push-server", server.start, server.stop, stop_timeout_s=settings.drain_s + 5),
    ]


def _publish_hook(settings: Settings) -> PublishHook:
    # HERALD_WEBHOOK_BLOCK_PRIVATE keeps publish hooks off the private network as it does
    # webhooks: the address is resolved and checked at each call (herald.messaging.egress).
    return PublishHook(
        settings.publish_hook_timeout_s,
        settings.publish_hook_concurrency,
        transport=PublicOnly() if settings.webhook_block_private else None,
    )
