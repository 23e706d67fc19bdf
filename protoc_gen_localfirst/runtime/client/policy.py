"""Retry policy with gRFC A6 semantics, and how a call's policy is chosen.

The wait between attempts is tenacity's full-jitter exponential strategy
(``wait_random_exponential``), and the stop rule is tenacity's
``stop_after_attempt``: the call state machine (``call``) evaluates them
without tenacity's loop, because that loop would have to be written twice
(asyncio and blocking) and cannot express hedging.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
import tenacity

from protoc_gen_localfirst.schema import Idempotency, MethodInfo, MethodPolicy

log = logging.getLogger("protoc_gen_localfirst.retry")

MAX_ATTEMPTS_CAP = 5
"""gRFC A6: maxAttempts counts the first call and values above 5 are treated as 5."""

DEFAULT_RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})

NOT_PROCESSED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
"""Codes that, before response headers, mean the request was not processed:
connection failures, refused streams (grpc surfaces REFUSED_STREAM as
UNAVAILABLE) and trailers-only UNAVAILABLE. Methods of unknown idempotency
retry only these, whatever their policy lists."""

REPLAY_SAFE = frozenset({Idempotency.IDEMPOTENT, Idempotency.NO_SIDE_EFFECTS})
"""Idempotency levels whose requests may be sent again after they may have run."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried; every attempt after the first goes to the next endpoint.

    ``max_attempts`` counts the first attempt (capped at 5, as in gRFC A6). The
    wait before attempt ``n+1`` is full jitter:
    ``uniform(0, min(initial_backoff * backoff_multiplier**(n-1), max_backoff))``,
    or exactly the server's ``grpc-retry-pushback-ms`` when it sent one.
    Only ``retryable_codes`` are retried, and never once the call is committed
    (response headers or a message arrived). UNAVAILABLE, the default, means
    "not processed" for any method. Wider sets apply only to methods whose
    proto says ``idempotency_level = IDEMPOTENT`` or ``NO_SIDE_EFFECTS``; for
    other methods the extra codes are ignored (with a one-time warning).

    ``per_attempt_timeout`` bounds each attempt inside the overall deadline (an
    attempt gets ``min(per_attempt_timeout, remaining)``); a per-attempt
    DEADLINE_EXCEEDED is retried when DEADLINE_EXCEEDED is in
    ``retryable_codes`` and the method is idempotent. ``hedging_delay`` (unary
    NO_SIDE_EFFECTS methods, both clients) sends the next attempt to the next
    endpoint when no answer came within that many seconds, up to
    ``max_attempts`` in flight; other methods ignore it.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.02
    max_backoff: float = 1.0
    backoff_multiplier: float = 2.0
    retryable_codes: frozenset[grpc.StatusCode] = field(default=DEFAULT_RETRYABLE_CODES)
    per_attempt_timeout: float | None = None
    hedging_delay: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("RetryPolicy backoffs must be >= 0")
        if self.backoff_multiplier < 1:
            raise ValueError(
                f"RetryPolicy.backoff_multiplier must be >= 1, got {self.backoff_multiplier}"
            )
        if self.per_attempt_timeout is not None and self.per_attempt_timeout <= 0:
            raise ValueError("RetryPolicy.per_attempt_timeout must be > 0")
        if self.hedging_delay is not None and self.hedging_delay < 0:
            raise ValueError("RetryPolicy.hedging_delay must be >= 0")
        object.__setattr__(self, "max_attempts", min(self.max_attempts, MAX_ATTEMPTS_CAP))
        object.__setattr__(self, "retryable_codes", frozenset(self.retryable_codes))

    @functools.cached_property
    def wait_strategy(self) -> tenacity.wait.wait_base:
        """tenacity's full-jitter strategy for these backoff settings."""
        return tenacity.wait_random_exponential(
            multiplier=self.initial_backoff, max=self.max_backoff, exp_base=self.backoff_multiplier
        )

    @functools.cached_property
    def stop_strategy(self) -> tenacity.stop.stop_base:
        return tenacity.stop_after_attempt(self.max_attempts)

    def backoff(self, retry_number: int) -> float:
        """Full-jitter wait before retry number ``retry_number`` (1 = first retry)."""
        return self.wait_strategy(retry_state(retry_number))

    def with_method_policy(self, method_policy: MethodPolicy) -> RetryPolicy:
        """This policy with the fields a proto's ``MethodPolicy`` sets replaced."""
        changes: dict[str, Any] = {
            f.name: getattr(method_policy, f.name)
            for f in dataclasses.fields(method_policy)
            if getattr(method_policy, f.name) is not None
        }
        if method_policy.retryable_codes is not None:  # names in the proto, codes here
            changes["retryable_codes"] = frozenset(
                grpc.StatusCode[name] for name in method_policy.retryable_codes
            )
        return dataclasses.replace(self, **changes) if changes else self


NO_RETRY = RetryPolicy(max_attempts=1)


def retry_state(attempt_number: int) -> tenacity.RetryCallState:
    """A tenacity call state at ``attempt_number`` (attempts made so far), for its strategies."""
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt_number
    return state


def effective_policy(
    method: MethodInfo[Any, Any], client_default: RetryPolicy, per_call: RetryPolicy | None
) -> RetryPolicy:
    """Per-call ``retry=`` > the proto's ``MethodInfo.policy`` > the client's ``retry=``."""
    if per_call is not None:
        return per_call
    return client_default.with_method_policy(method.policy)


_warned: set[str] = set()


def allowed_codes(method: MethodInfo[Any, Any], policy: RetryPolicy) -> frozenset[grpc.StatusCode]:
    """The codes ``method`` may really retry under ``policy`` (idempotency-aware)."""
    if method.idempotency in REPLAY_SAFE:
        return policy.retryable_codes
    allowed = policy.retryable_codes & NOT_PROCESSED_CODES
    if allowed != policy.retryable_codes and method.path not in _warned:
        _warned.add(method.path)
        ignored = sorted(c.name for c in policy.retryable_codes - allowed)
        log.warning(
            "%s is not marked idempotent (idempotency_level); its policy's retryable codes %s "
            "are ignored: only a request that provably was not processed is retried",
            method.path,
            ", ".join(ignored),
        )
    return allowed


_warned_hedging: set[str] = set()


def hedges(method: MethodInfo[Any, Any], policy: RetryPolicy) -> bool:
    """Whether calls of ``method`` under ``policy`` are hedged (unary, NO_SIDE_EFFECTS).

    A hedging delay that cannot apply (a streaming rpc, or one not marked
    NO_SIDE_EFFECTS) is ignored with one warning naming the method: the calls
    are then retried sequentially, as without the delay.
    """
    if policy.hedging_delay is None or policy.max_attempts <= 1:
        return False
    unary = method.kind.value == "unary_unary"
    safe = method.idempotency is Idempotency.NO_SIDE_EFFECTS
    if not (unary and safe) and method.path not in _warned_hedging:
        _warned_hedging.add(method.path)
        why = (
            f"it is a {method.kind.value.replace('_', '-')} rpc (only unary rpcs are hedged)"
            if not unary
            else "it is not marked `option idempotency_level = NO_SIDE_EFFECTS`"
        )
        log.warning(
            "%s: the hedging policy (hedging_delay=%ss) is ignored because %s; "
            "failed attempts are retried one after another instead",
            method.path,
            policy.hedging_delay,
            why,
        )
    return unary and safe
