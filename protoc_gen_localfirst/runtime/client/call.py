"""The attempts of one call as a sans-IO state machine.

Like h11's ``next_event()``: the driver (asyncio or blocking) asks
``next_action()`` what to do, does that I/O, and reports the outcome with
``attempt_succeeded`` / ``attempt_failed``. The machine decides everything
else, once for both clients: which endpoint each attempt goes to (locality
order from the balancer), how long it may take, whether a failure may be
retried (gRFC A6: retryable code, idempotency, commit, pushback, throttling,
deadline), how long to back off (tenacity's full-jitter strategy), when to
hedge, and the error the caller finally sees.

The driver's side of the conversation (``actions``): ``CallSettings``, what a
call starts with, and the actions ``Attempt``, ``Wait``, ``AwaitEndpoints``
and ``GiveUp``.

Transparent retries (gRFC A6): an attempt that never left the client (no
connection, HTTP/3 request not sent, stream refused) is retried whatever the
method's idempotency and policy, with backoff, without counting against
``max_attempts`` or the retry budget, until the deadline (or, without one,
for ``unsent_patience`` seconds).

A success needs no action: the driver returns the response it holds (and
cancels other hedged attempts still in flight).

Observers (``ClientEvents``): the machine raises every per-call and
per-attempt event, so both drivers report calls identically: call started,
attempt started (observers may add request metadata to it, e.g. trace
context: it goes into ``Attempt.metadata``, which both transports send),
attempt finished (outcome, status, latency), call finished (exactly once:
success, the caller's error, or ``close()`` by a driver that gave the call
up: cancelled, or a stream the caller stopped reading).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from protoc_gen_localfirst.runtime.client.actions import (
    Action,
    Attempt,
    AwaitEndpoints,
    CallSettings,
    GiveUp,
    Metadata,
    Wait,
)
from protoc_gen_localfirst.runtime.client.errors import AttemptRecord, CallFailedError
from protoc_gen_localfirst.runtime.client.failures import (
    DO_NOT_RETRY,
    Failure,
    as_aio_metadata,
    headers_arrived,
    status_of,
)
from protoc_gen_localfirst.runtime.client.load import SPILL_REFUSED, node_and_report
from protoc_gen_localfirst.runtime.client.observers import (
    LOCALITY_TIERS,
    AttemptFinished,
    AttemptInfo,
    CallFinished,
    CallInfo,
    Locality,
    Outcome,
)
from protoc_gen_localfirst.runtime.client.policy import (
    NOT_PROCESSED_CODES,
    REPLAY_SAFE,
    retry_state,
)
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.identity import announced_node

PREVIOUS_ATTEMPTS_KEY = "localfirst-previous-rpc-attempts"
"""Sent on attempts after the first (the value is how many came before).
gRFC A6 names it ``grpc-previous-rpc-attempts``, but grpcio (1.85) accepts a
``grpc-`` key from the application and then drops it: the server never sees
it. So the runtime uses its own key, next to ``localfirst-node``."""


class CallState:
    """One call: its attempts so far, its deadline, and what happens next."""

    # Starting values (immutable) live on the class: a call sets only those that
    # change, and most calls change few (one attempt, one answer).
    started = 0
    """Attempts started (hedged attempts overlap, so this can exceed ``records``)."""
    in_flight = 0
    committed = False
    """Response headers or a message arrived, or requests can no longer be replayed:
    no further attempt (gRFC A6)."""
    _verdict: GiveUp | None = None
    _backoff: float | None = None
    """Sequential calls: the wait before the next attempt, once decided."""
    _pushback: float | None = None
    _backoff_retries = 0
    _more = True
    """Hedged calls: further attempts may still be sent."""
    _next_hedge_at = 0.0
    _last: _Verdict | None = None
    _index = 0
    """Position in ``_order`` of the next attempt's endpoint."""
    _transparent = 0
    """Failed attempts that never left the client (not counted in ``max_attempts``)."""
    _unsent_since: float | None = None
    _await: AwaitEndpoints | None = None
    _replan = False
    _refreshed = False
    _not_before = 0.0
    """Hedged calls: no attempt before this time (backoff after an unsent attempt)."""
    _finished = False
    _hedges = 0
    _failovers = 0
    _transparent_retries = 0
    _pending_transparent = 0
    _last_endpoint: Endpoint | None = None
    _idle_since: float | None = None
    """When the last attempt in flight ended (None: one is in flight, or none started)."""
    _retry_delay = 0.0
    _call_info: CallInfo | None = None
    _unreachable: frozenset[str] | set[str] = frozenset()
    """Endpoints whose attempts could not be sent since the endpoint set last changed."""

    def __init__(
        self,
        settings: CallSettings,
        *,
        timeout: float | None,
        metadata: Metadata | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.method = settings.path
        self.policy = settings.policy
        self.hedging = settings.hedging
        self.timeout = timeout
        self.metadata = metadata
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self._order, spill = settings.balancer.plan()
        self.records: list[AttemptRecord] = []
        self._spill = spill
        events = settings.events
        if events.enabled:
            info = settings.info
            self._call_info = CallInfo(
                method=f"{info.service}/{info.name}",
                path=self.method,
                target=settings.target,
                transport=settings.transport,
                kind=info.kind.value,
                started_at=clock(),
            )
        events.call_started(self._call_info)  # counted even without observers
        if spill is not None:
            events.spill(self.method, spill)

    # -- what to do next -------------------------------------------------------

    def next_action(self) -> Action:
        """The next thing the driver should do (see the module docstring)."""
        if self.started == 0 and not self.hedging:  # a call's first attempt: nothing to weigh
            action = self._attempt(hedged=False)
        else:
            action = self._next_action()
        if isinstance(action, GiveUp):
            self._finish(status_of(action.error)[0], None)
        return action

    def close(self) -> None:
        """The driver is done with the call: if it never ended, it was cancelled (or,
        for a stream, the caller stopped reading). Raises ``on_call_finished`` once."""
        if not self._finished:
            self._finish(grpc.StatusCode.CANCELLED, None)

    def _finish(self, code: grpc.StatusCode, endpoint: Endpoint | None) -> None:
        if self._finished:
            return
        self._finished = True
        info = self._call_info
        if info is None:
            return
        endpoint = endpoint or self._last_endpoint
        started = self.started
        self.settings.events.call_finished(
            CallFinished(
                call=info,
                code=code,
                latency=self._clock() - info.started_at,
                attempts=started,
                retries=max(started - 1 - self._transparent_retries, 0),
                transparent_retries=self._transparent_retries,
                retry_delay=self._retry_delay,
                hedges=self._hedges,
                failovers=self._failovers,
                spill=self._spill,
                endpoint=endpoint,
                locality=None if endpoint is None else self._locality(endpoint),
            )
        )

    def _locality(self, endpoint: Endpoint) -> Locality:
        return LOCALITY_TIERS[min(self.settings.balancer.tier(endpoint), 2)]

    def _attempt_outcome(
        self, attempt: Attempt, outcome: Outcome, code: grpc.StatusCode, metadata: Metadata | None
    ) -> None:
        """``on_attempt_finished``; ``metadata``: the response's, which may name its node."""
        if attempt.info is not None:  # observers listen: only then is the record made
            self.settings.events.attempt_finished(
                AttemptFinished(
                    attempt=attempt.info,
                    outcome=outcome,
                    code=code,
                    latency=self._clock() - attempt.started_at,
                    node=announced_node(metadata) or attempt.endpoint.node,
                )
            )

    def _next_action(self) -> Action:
        if self._verdict is not None:
            return self._verdict
        if self._await is not None and self.in_flight == 0:
            action, self._await, self._replan = self._await, None, True
            return action
        if self._replan:  # after waiting for discovery: the endpoint set as it is now
            self._order, _ = self.settings.balancer.plan()
            self._index, self._replan = 0, False
            self._unreachable = frozenset()
        if self.hedging:
            return self._next_hedged()
        if self._backoff is not None:
            wait, self._backoff = self._backoff, None
            if wait > 0:
                return Wait(wait)
        if self.in_flight:
            raise RuntimeError("next_action() while the attempt is in flight")
        return self._attempt(hedged=False)

    def _next_hedged(self) -> Action:
        """gRFC A6 hedging: a new attempt every ``hedging_delay`` while none answered.

        A retryable failure sends the next attempt at once; pushback sets the
        delay before the next; throttling or "do not retry" stop new attempts
        (those in flight still may answer).
        """
        now = self._clock()
        counted = self.started - self._transparent
        can_send = self._more and counted < self.policy.max_attempts and self._await is None
        can_send = can_send and not self._deadline_passed(now)
        due = self.in_flight == 0 or now >= self._next_hedge_at
        if can_send and due and now < self._not_before:  # backing off after an unsent attempt
            return Wait(self._not_before - now)
        if can_send and due:
            throttle = self.settings.throttle
            if self.started > 0 and throttle is not None and not throttle.allows_retry():
                self._more = can_send = False
                self.settings.events.throttled(self.method)
            else:
                delay = self.policy.hedging_delay or 0.0
                if self._pushback is not None:
                    delay, self._pushback = self._pushback, None
                self._next_hedge_at = now + delay
                return self._attempt(hedged=self.started > 0)
        if self.in_flight:
            return Wait(max(self._next_hedge_at - now, 0.0) if can_send else None)
        assert self._last is not None, "hedging ended without an attempt"
        return self._give_up(self._last)

    def _attempt(self, *, hedged: bool) -> Action:
        endpoint = self._order.cycle(self._index)
        if endpoint is None:
            return GiveUp(
                CallFailedError(
                    method=self.method,
                    code=grpc.StatusCode.UNAVAILABLE,
                    summary=self.settings.no_endpoints_reason(),
                    attempts=(),
                )
            )
        self._index += 1
        self.started = number = self.started + 1
        now = self._clock()
        self.in_flight += 1
        read_trailers = self.settings.balancer.attempt_started(endpoint, now)
        metadata = self.metadata
        last = None
        if number > 1:  # a retry, failover or hedge: what a first attempt has none of
            if self.in_flight == 1 and self._idle_since is not None:
                self._retry_delay += now - self._idle_since
                self._idle_since = None
            previous = (PREVIOUS_ATTEMPTS_KEY, str(number - 1))
            metadata = (*metadata, previous) if metadata else (previous,)
            last = self.records[-1].endpoint if self.records else None
            if hedged:
                self._hedges += 1
            elif last is not None and last.address != endpoint.address:
                self._failovers += 1
            if self._pending_transparent:
                self._pending_transparent -= 1
                self._transparent_retries += 1
        self._last_endpoint = endpoint
        events = self.settings.events
        events.attempt(self.method, endpoint, number, hedged=hedged, previous=last)
        info = None
        if self._call_info is not None:
            locality = self._locality(endpoint)
            info = AttemptInfo(self._call_info, number, endpoint, locality, hedged, now)
            events.attempt_started(info)
            if info.metadata:  # what observers add (trace context): one place, both transports
                metadata = (*metadata, *info.metadata) if metadata else tuple(info.metadata)
        # The attempt's timeout: min(per_attempt_timeout, what remains of the deadline).
        timeout = self.policy.per_attempt_timeout
        if self._deadline is not None:
            remaining = max(self._deadline - now, 0.0)
            timeout = remaining if timeout is None else min(timeout, remaining)
        read_trailers = read_trailers or info is not None
        return Attempt(number, endpoint, timeout, metadata, hedged, now, info, read_trailers)

    def _deadline_passed(self, now: float | None = None) -> bool:
        if self._deadline is None:
            return False
        return (self._clock() if now is None else now) >= self._deadline

    # -- outcomes ----------------------------------------------------------------

    def headers_received(self, attempt: Attempt, headers: Metadata | None) -> None:
        """A stream's response headers arrived (none: a trailers-only answer is coming)."""
        if headers:  # the call is committed (gRFC A6)
            self.committed = True
        self._learn_node(attempt.endpoint, node_and_report(headers)[0])

    def attempt_succeeded(self, attempt: Attempt, trailers: Metadata | None = None) -> None:
        """``attempt`` answered OK (for streams: it committed and ended OK); ``trailers``
        as read when ``attempt.read_trailers`` said so, else None. Every call's last step:
        one pass over the trailers, one balancer call."""
        endpoint = attempt.endpoint
        settings = self.settings
        report = None
        if trailers:
            node, report = node_and_report(trailers)
            self._learn_node(endpoint, node)
        if self._call_info is None:  # the common case: no observer wants records
            self.in_flight -= 1
            self._finished = True
        else:
            self._one_ended()
            self._attempt_outcome(attempt, "ok", grpc.StatusCode.OK, trailers)
            self._finish(grpc.StatusCode.OK, endpoint)
        latency = self._clock() - attempt.started_at if settings.unary else None
        settings.balancer.attempt_ended(endpoint, latency, report, ok=True)
        throttle = settings.throttle
        if throttle is not None and throttle.tokens < throttle.max_tokens:
            throttle.record_success()
        if self.hedging and attempt.number > 1:
            settings.events.hedge_won()

    def attempt_failed(
        self, attempt: Attempt, error: grpc.RpcError, *, replayable: bool = True
    ) -> None:
        """``attempt`` failed with ``error``; ``replayable`` is False once requests were lost."""
        self._one_ended()
        if headers_arrived(error) or not replayable:
            self.committed = True
        failure = Failure.of(error)
        outcome: Outcome = (
            "refused" if failure.overloaded else "unsent" if failure.not_taken else "error"
        )
        self._attempt_outcome(attempt, outcome, failure.code, failure.trailers)
        # A refused call never ran there: its report does not count it.
        self._attempt_ended(attempt, failure.trailers, ran=not failure.overloaded)
        if failure.overloaded:
            self.settings.events.spill(self.method, SPILL_REFUSED)
        self.records.append(AttemptRecord(attempt.endpoint, failure.code, failure.details))
        deadline_passed = self._deadline_passed()
        if not (failure.overloaded or failure.refused_stream):  # busy, not broken: no ejection
            self._report_endpoint(attempt.endpoint, failure, deadline_passed)
        retryable, throttled = self._retryable(failure, deadline_passed)
        if throttled:
            self.settings.events.throttled(self.method)
        self._pushback = None if failure.pushback == DO_NOT_RETRY else failure.pushback
        self._last = verdict = _Verdict(failure, retryable, throttled)
        if failure.not_taken and not self.committed:
            self._retry_unsent(attempt, verdict)
        elif self.hedging:
            self._after_hedge_failure(verdict)
        elif not retryable:
            self._verdict = self._give_up(verdict)
        else:
            self._schedule_retry(verdict)

    def attempt_cancelled(self, attempt: Attempt) -> None:
        """A hedged attempt lost the race and was cancelled (or the caller cancelled)."""
        self._one_ended()
        self._attempt_outcome(attempt, "cancelled", grpc.StatusCode.CANCELLED, None)
        self._attempt_ended(attempt, None)

    def _one_ended(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._call_info is not None:
            self._idle_since = self._clock()  # for observers: time with no attempt in flight

    def _attempt_ended(
        self, attempt: Attempt, trailers: Metadata | None, *, ran: bool = True
    ) -> None:
        """An attempt ended without an answer: its endpoint's load (and report) only."""
        _, report = node_and_report(trailers)
        self.settings.balancer.attempt_ended(attempt.endpoint, None, report, ran=ran)

    def _learn_node(self, endpoint: Endpoint, node: str | None) -> None:
        """Servers name their node in response metadata: keep the balancer's view right."""
        if node is not None and node != endpoint.node:
            self.settings.balancer.learn_node(endpoint.address, node)

    def stream_failed(self, attempt: Attempt, error: grpc.RpcError) -> GiveUp:
        """A committed stream failed: nothing more to try, this is the caller's error."""
        self.committed = True
        self.attempt_failed(attempt, error)
        assert self._verdict is not None
        self._finish(status_of(self._verdict.error)[0], attempt.endpoint)
        return self._verdict

    def _report_endpoint(self, endpoint: Endpoint, failure: Failure, deadline_passed: bool) -> None:
        if self.committed:
            return
        code = failure.code
        if failure.draining and failure.not_processed:
            self.settings.balancer.record_stopping(endpoint)
        elif code in NOT_PROCESSED_CODES:
            self.settings.balancer.record_connection_failure(endpoint)
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED and not deadline_passed:
            # The per-attempt timeout cut it: the endpoint is slow or frozen.
            self.settings.balancer.record_timeout(endpoint)

    def _retryable(self, failure: Failure, deadline_passed: bool) -> tuple[bool, bool]:
        """(may another attempt follow, was it refused only by throttling)."""
        if failure.not_taken and not self.committed and not deadline_passed:
            return True, False  # transparent: any method, any policy, no retry budget spent
        codes = self.settings.retryable_codes
        throttle = self.settings.throttle
        # A stopping server's refusal is not overload: it does not drain the
        # retry budget (else a rolling redeploy throttles every retry away).
        counts = failure.code in codes or failure.pushback == DO_NOT_RETRY
        counts = counts and not failure.draining and not failure.overloaded
        if counts and throttle is not None:
            throttle.record_failure()
        replay_safe = self.settings.info.idempotency in REPLAY_SAFE
        retryable = (
            failure.code in codes
            and failure.pushback != DO_NOT_RETRY
            and not self.committed
            and not deadline_passed
            and (replay_safe or failure.not_processed)
        )
        if retryable and throttle is not None and not throttle.allows_retry():
            return False, True
        return retryable, False

    def _retry_unsent(self, attempt: Attempt, verdict: _Verdict) -> None:
        """gRFC A6 transparent retry: the request never left (or a stopping server
        refused it unprocessed); try again until time runs out."""
        self._transparent += 1
        self._pending_transparent = 1
        now = self._clock()
        if self._unsent_since is None:
            self._unsent_since = now
        out_of_time = self._deadline_passed(now) or (
            self._deadline is None and now - self._unsent_since >= self.settings.unsent_patience
        )
        if out_of_time:
            if self.hedging:
                self._more = False  # hedges in flight may still answer
            else:
                self._verdict = self._give_up(verdict)
            return
        if verdict.failure.refused_stream and not self.hedging:
            # The replica answered (it is at its stream limit): the next attempt queues
            # on the connection, which now knows the limit. Nothing is unreachable.
            self._schedule_retry(verdict, counted=False)
            return
        self._unreachable = {*self._unreachable, attempt.endpoint.address}
        if self._unreachable >= {e.address for e in self._order}:
            # Every known endpoint refused or is stopping: the set is stale. Re-resolve now, and
            # wait (within the deadline) for it to change before trying again.
            if not self._refreshed:
                self._refreshed = True
                self.settings.refresh()
            remaining = (
                self._deadline - now
                if self._deadline is not None
                else self.settings.unsent_patience - (now - self._unsent_since)
            )
            # At most a backoff's length: a replica may come back at the same address.
            wait = min(remaining, self.policy.max_backoff)
            self._await = AwaitEndpoints(wait, self.settings.balancer.version)
            self._unreachable = frozenset()
            return
        if self.hedging:
            self._backoff_retries += 1
            backoff = self.policy.wait_strategy(retry_state(self._backoff_retries))
            self._not_before = now + backoff
            return
        self._schedule_retry(verdict, counted=False)

    def _schedule_retry(self, verdict: _Verdict, *, counted: bool = True) -> None:
        """Back off (pushback, else full jitter), unless attempts or time run out."""
        if verdict.failure.overloaded or verdict.failure.refused_stream:
            wait, pushed = 0.0, False  # refused unprocessed: the next attempt may go now
        elif self._pushback is not None:
            wait, self._pushback, self._backoff_retries = self._pushback, None, 0
            pushed = True
        else:
            self._backoff_retries += 1
            wait = self.policy.wait_strategy(retry_state(self._backoff_retries))
            pushed = False
        attempts = len(self.records) - self._transparent
        stop = counted and self.policy.stop_strategy(retry_state(attempts))
        if not counted and self._deadline is not None:
            # Unsent: keep trying to the end, so the call fails only when its deadline does.
            wait = min(wait, max(self._deadline - self._clock(), 0.0))
        elif self._deadline is not None and self._clock() + wait >= self._deadline:
            stop = True
        if stop:
            self._verdict = self._give_up(verdict)
            return
        self._backoff = wait
        code = verdict.failure.code
        self.settings.events.retry(self.method, len(self.records), code, wait, pushback=pushed)

    def _after_hedge_failure(self, verdict: _Verdict) -> None:
        if verdict.retryable:
            self._next_hedge_at = self._clock()  # non-fatal: the next hedge goes now
        elif verdict.failure.code in self.settings.retryable_codes and not self.committed:
            self._more = False  # pushback "do not retry", or throttled
        else:
            self._verdict = self._give_up(verdict)

    # -- the caller's error --------------------------------------------------------

    def _give_up(self, verdict: _Verdict) -> GiveUp:
        """What the caller sees once no further attempt will be made.

        A status the method chose to return (not retryable, or committed) is the
        answer of the service: it is raised unchanged, trailers and all. Running
        out of attempts or of time raises ``CallFailedError``, naming every
        endpoint tried; so does a retry refused by throttling.
        """
        failure = verdict.failure
        tried = _attempts(self.records)
        passed = self._deadline_passed()
        if passed or failure.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            if passed or self.policy.per_attempt_timeout is None:
                summary = f"deadline of {self.timeout}s exceeded after {tried}"
            else:
                timeout = self.policy.per_attempt_timeout
                summary = f"attempt timeout of {timeout}s exceeded after {tried}"
            return self._failed(grpc.StatusCode.DEADLINE_EXCEEDED, summary, failure, None)
        if verdict.throttled:
            summary = f"retries throttled (too many recent failures) after {tried}"
        elif not verdict.retryable:
            return GiveUp(failure.error)  # the service's answer
        elif failure.not_taken:
            summary = f"no endpoint could be reached after {tried}"
        elif len(self.records) - self._transparent >= self.policy.max_attempts:
            summary = f"all {tried} failed"
        else:
            summary = f"gave up after {tried}: backoff would pass the deadline"
        return self._failed(failure.code, summary, failure, as_aio_metadata(failure.trailers))

    def _failed(
        self, code: grpc.StatusCode, summary: str, failure: Failure, trailers: Any
    ) -> GiveUp:
        error = CallFailedError(
            method=self.method,
            code=code,
            summary=summary,
            attempts=self.records,
            trailing_metadata=trailers,
        )
        return GiveUp(error, cause=failure.error)


@dataclass(frozen=True, slots=True)
class _Verdict:
    """A failed attempt and what was decided about it."""

    failure: Failure
    retryable: bool
    throttled: bool


def _attempts(records: Sequence[AttemptRecord]) -> str:
    return "1 attempt" if len(records) == 1 else f"{len(records)} attempts"
