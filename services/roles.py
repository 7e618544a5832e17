"""Every service's ``build``, by role: what ``herald <role>`` and ``herald dev`` start.

Imported, not looked up by name, so the dependency of the commands on the services is
visible to readers and tools.
"""

from __future__ import annotations

from herald.services.auth import main as auth
from herald.services.collect import main as collect
from herald.services.dispatch import main as dispatch
from herald.services.push import main as push

BUILDERS = {
    "auth": auth.build,
    "collect": collect.build,
    "dispatch": dispatch.build,
    "push": push.build,
}
