"""The bus on RabbitMQ: ``AmqpBus`` (bus.py), its topology, dead letters, link and subscriptions."""

from herald.adapters.bus.amqp.bus import AmqpBus

__all__ = ["AmqpBus"]
