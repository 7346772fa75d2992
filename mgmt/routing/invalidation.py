"""Tell the gateways that routing or accounts changed, once the change is committed.

The gateway reloads its in-memory snapshot when a message arrives on channel() (appliance/gateway/snapshot.py).
"""

from __future__ import annotations

import json
import logging
import time

import redis
from django.conf import settings
from django.db import transaction

from appliance.gateway.snapshot import INVALIDATION_CHANNEL

__all__ = ["channel", "publish_invalidation", "publish_on_commit"]

log = logging.getLogger(__name__)


def channel() -> str:
    """This appliance's invalidation channel (named after its database, as the gateway computes it)."""
    return f"{INVALIDATION_CHANNEL}:{settings.DATABASES['default']['NAME']}"


def publish_invalidation(reason: str) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.publish(channel(), json.dumps({"reason": reason, "ts": time.time()}))
    except redis.RedisError:
        # The gateway also reloads on a timer (ENCLAVE_GATEWAY_RELOAD_SECONDS): a lost message delays
        # the change, it does not lose it.
        log.warning("could not publish gateway invalidation (%s)", reason, exc_info=True)
    finally:
        client.close()


def publish_on_commit(reason: str) -> None:
    transaction.on_commit(lambda: publish_invalidation(reason))
