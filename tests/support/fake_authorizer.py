"""A fake ``Authorizer`` for the front-end tests and benches.

It records every request and answers per account: allow with ``max_usage`` and routes,
deny with a reason, block until an event is set, or raise. With ``soon`` it also answers
from callbacks (``decide_soon``), as the real service does for the common call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal

from daemon.authorization import (
    AuthorizationDecision,
    AuthorizationRequest,
    DecisionListener,
    Reason,
    Route,
)

DEFAULT_MAX_USAGE = 60


def routes_for(callee: str) -> tuple[Route, ...]:
    """The two routes the fake offers by default for ``callee``."""
    return (
        Route(
            carrier="carrier-a", dial_string=f"PJSIP/{callee}@carrier-a", buy_rate=Decimal("0.0042")
        ),
        Route(
            carrier="carrier-b", dial_string=f"PJSIP/{callee}@carrier-b", buy_rate=Decimal("0.0051")
        ),
    )


class FakeAuthorizerError(RuntimeError):
    """The failure a ``FakeAuthorizer`` raises on demand."""


@dataclass
class _Plan:
    decision: AuthorizationDecision | None = None
    error: BaseException | None = None
    gate: asyncio.Event | None = None


@dataclass
class FakeAuthorizer:
    """Records requests; answers per account (default: allow 60 s over ``routes_for``)."""

    requests: list[AuthorizationRequest] = field(default_factory=list)
    _plans: dict[str, _Plan] = field(default_factory=dict)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    soon: bool = False  # decide from callbacks too (``decide_soon``)
    decided_soon: int = 0  # requests taken by ``decide_soon``
    _waiting: set[asyncio.Task[None]] = field(default_factory=set)

    def allow(self, account: str, max_usage: int, routes: tuple[Route, ...] = ()) -> None:
        """Allow ``account`` for ``max_usage`` seconds over ``routes``."""
        decision = AuthorizationDecision(
            allowed=True, reason=Reason.OK, max_usage=max_usage, routes=routes
        )
        self._plans[account] = _Plan(decision=decision)

    def deny(self, account: str, reason: Reason) -> None:
        """Deny ``account`` with ``reason``."""
        self._plans[account] = _Plan(decision=AuthorizationDecision.deny(reason))

    def fail(self, account: str, error: BaseException | None = None) -> None:
        """Raise ``error`` (a ``FakeAuthorizerError`` by default) for ``account``."""
        self._plans[account] = _Plan(error=error or FakeAuthorizerError(f"boom for {account}"))

    def block(self, account: str) -> asyncio.Event:
        """Make ``account`` wait until the returned event is set, then answer the default."""
        gate = asyncio.Event()
        self._plans[account] = _Plan(gate=gate)
        return gate

    async def authorize(self, request: AuthorizationRequest) -> AuthorizationDecision:
        """Record the request and answer as planned for its account."""
        plan = self._entered(request)
        if plan.gate is not None:
            await plan.gate.wait()
        if plan.error is not None:
            raise plan.error
        return self._decision(plan, request)

    def decide_soon(self, request: AuthorizationRequest, listener: DecisionListener) -> bool:
        """With ``soon``: record the request and tell ``listener`` as planned, from a
        callback (after the gate, if blocked). Without: False, nothing recorded."""
        if not self.soon:
            return False
        plan = self._entered(request)
        self.decided_soon += 1
        loop = asyncio.get_running_loop()
        if plan.gate is not None:
            task = loop.create_task(self._after_gate(plan, request, listener))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
        elif plan.error is not None:
            loop.call_soon(listener.failed, plan.error)
        else:
            loop.call_soon(listener.decided, self._decision(plan, request))
        return True

    async def _after_gate(
        self, plan: _Plan, request: AuthorizationRequest, listener: DecisionListener
    ) -> None:
        assert plan.gate is not None
        await plan.gate.wait()
        if plan.error is not None:
            listener.failed(plan.error)
        else:
            listener.decided(self._decision(plan, request))

    def _entered(self, request: AuthorizationRequest) -> _Plan:
        self.requests.append(request)
        self.entered.set()
        return self._plans.get(request.account, _Plan())

    def _decision(self, plan: _Plan, request: AuthorizationRequest) -> AuthorizationDecision:
        if plan.decision is not None:
            return plan.decision
        return AuthorizationDecision(
            allowed=True,
            reason=Reason.OK,
            max_usage=DEFAULT_MAX_USAGE,
            routes=routes_for(request.callee),
            rate=Decimal("0.0100"),
            destination="test destination",
        )
