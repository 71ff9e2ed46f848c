"""Token buckets for the public endpoints: /aml per gateway, /api/v1/complaints per client IP.

Each key has a bucket of ``burst`` tokens refilled at ``rate`` tokens a second; a request takes
one token or is refused with 429 and a Retry-After saying when the next token arrives. A refused
request is answered before its body is read, so nothing of it is stored.

Memory is bounded: at most ``max_keys`` buckets are kept, least recently used first out (an
evicted key comes back with a full bucket, which is what an idle key would have anyway).

Limits come from the environment, with defaults no honest client reaches:

==================================  =========  ===========================================
variable                            default    meaning
==================================  =========  ===========================================
SIAGA112_AML_RATE_PER_S             20         POST /aml messages a second per gateway
SIAGA112_AML_BURST                  100        ... allowed back to back
SIAGA112_COMPLAINTS_RATE_PER_S      1          POST /api/v1/complaints a second per IP
SIAGA112_COMPLAINTS_BURST           10         ... allowed back to back
==================================  =========  ===========================================
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from ari_app.config import ConfigError

__all__ = [
    "AML_LIMITER",
    "COMPLAINTS_LIMITER",
    "RateLimit",
    "TokenBucketLimiter",
    "client_ip",
    "too_many_requests",
]

DEFAULT_MAX_KEYS = 10_000


@dataclass(frozen=True)
class RateLimit:
    rate_per_s: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s > 0):
            raise ValueError(f"rate_per_s must be a positive number, got {self.rate_per_s!r}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst!r}")

    @classmethod
    def from_env(cls, prefix: str, default: RateLimit,
                 environ: Mapping[str, str] | None = None) -> RateLimit:
        """``{prefix}_RATE_PER_S`` and ``{prefix}_BURST`` override ``default``."""
        env = os.environ if environ is None else environ
        rate_name, burst_name = f"{prefix}_RATE_PER_S", f"{prefix}_BURST"
        rate, burst = default.rate_per_s, default.burst
        raw_rate = env.get(rate_name, "")
        if raw_rate:
            try:
                rate = float(raw_rate)
            except ValueError:
                rate = math.nan
            if not (math.isfinite(rate) and rate > 0):
                raise ConfigError(f"environment {rate_name}", rate_name,
                                  "a positive number of requests a second", raw_rate)
        raw_burst = env.get(burst_name, "")
        if raw_burst:
            if not raw_burst.isdigit() or not 1 <= int(raw_burst) <= 1_000_000:
                raise ConfigError(f"environment {burst_name}", burst_name,
                                  "an integer 1..1000000", raw_burst)
            burst = int(raw_burst)
        return cls(rate, burst)


AML_DEFAULT = RateLimit(20.0, 100)
COMPLAINTS_DEFAULT = RateLimit(1.0, 10)


class TokenBucketLimiter:
    """Per-key token buckets with bounded memory. Not thread-safe: one per event loop."""

    def __init__(self, limit: RateLimit, *, max_keys: int = DEFAULT_MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys!r}")
        self.limit, self.max_keys, self.clock = limit, max_keys, clock
        # key -> (tokens, time of last update); order is least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds until one is available."""
        now = self.clock()
        rate, burst = self.limit.rate_per_s, float(self.limit.burst)
        found = self._buckets.pop(key, None)
        if found is None:
            tokens = burst
            while len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
        else:
            tokens, last = found
            tokens = min(burst, tokens + max(0.0, now - last) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        self.refused += 1
        return (1.0 - tokens) / rate


AML_LIMITER = web.AppKey("aml_limiter", TokenBucketLimiter)
COMPLAINTS_LIMITER = web.AppKey("complaints_limiter", TokenBucketLimiter)


def client_ip(request: web.Request) -> str:
    """The peer address. X-Forwarded-For is not trusted: a client could name any address."""
    return request.remote or "unknown"


def too_many_requests(wait_s: float, what: str) -> web.Response:
    retry_after = max(1, math.ceil(wait_s))
    return web.json_response(
        {"error": f"too many requests {what}; retry after {retry_after} s",
         "retry_after_s": retry_after},
        status=429, headers={"Retry-After": str(retry_after)})
