"""Herald's Python client: ``Publisher`` (an app sending messages and issuing connect
tokens), ``Operator`` (apps and keys) and ``Subscriber`` (a user's live messages).

Installed on its own (``pip install herald-client``) it needs httpx and websockets only,
so a business system that sends messages does not carry the server's dependencies.
"""

from herald_client.apis import Operator, Publisher
from herald_client.errors import HeraldAPIError, Revoked, SubscriptionEnded, TokenExpired
from herald_client.policy import TokenSource
from herald_client.subscriber import Subscriber

__version__ = "0.1.0"

__all__ = [
    "HeraldAPIError",
    "Operator",
    "Publisher",
    "Revoked",
    "Subscriber",
    "SubscriptionEnded",
    "TokenExpired",
    "TokenSource",
    "__version__",
]
