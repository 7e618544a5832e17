"""The bus in-process, for standalone mode: ``MemoryBus`` (bus.py), its queues and consumers."""

from herald.adapters.bus.memory.bus import MemoryBus

__all__ = ["MemoryBus"]
