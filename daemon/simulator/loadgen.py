"""Load generation with the simulator: launch calls at a given rate (calls per second).

``run_calls`` starts one task per plan on a fixed schedule (call ``i`` starts at
``i / cps`` seconds), optionally never more than ``concurrency_cap`` at once, keeps a
reference to every task in a ``TaskGroup`` (a failing call cancels the run and its
error propagates), and returns the outcomes in plan order. ``make_plans`` builds
reproducible random plans from a seed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from daemon.simulator.asterisk import CallOutcome, CallPlan, Outcome, SimulatorConfigError

OutcomeHook = Callable[[CallOutcome], None]


class CallPlacer(Protocol):
    """Anything that can run one call (``SimulatedAsterisk``)."""

    async def place_call(self, plan: CallPlan) -> CallOutcome:
        """Run the call to its end."""
        ...


async def run_calls(
    sim: CallPlacer,
    plans: Iterable[CallPlan],
    cps: float,
    concurrency_cap: int | None = None,
    *,
    on_outcome: OutcomeHook | None = None,
) -> list[CallOutcome]:
    """Place every plan at ``cps`` calls per second; outcomes in plan order."""
    if not cps > 0:
        raise SimulatorConfigError(f"cps must be > 0: {cps}")
    if concurrency_cap is not None and concurrency_cap < 1:
        raise SimulatorConfigError(f"concurrency_cap must be >= 1: {concurrency_cap}")
    plan_list = list(plans)
    results: list[CallOutcome | None] = [None] * len(plan_list)
    slots = asyncio.Semaphore(concurrency_cap) if concurrency_cap else None
    loop = asyncio.get_running_loop()

    async def one(index: int, plan: CallPlan) -> None:
        try:
            outcome = await sim.place_call(plan)
        finally:
            if slots is not None:
                slots.release()
        results[index] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    start = loop.time()
    async with asyncio.TaskGroup() as group:
        for index, plan in enumerate(plan_list):
            delay = start + index / cps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if slots is not None:
                await slots.acquire()
            group.create_task(one(index, plan), name=f"sim-call-{index}")
    return [outcome for outcome in results if outcome is not None]


def make_plans(
    n: int,
    accounts: Sequence[str],
    callees: Sequence[str],
    talk_range: tuple[float, float],
    rng_seed: int,
    *,
    ring_range: tuple[float, float] = (0.0, 0.0),
    outcomes: Sequence[Outcome] = ("answer",),
    authorize: bool = True,
) -> list[CallPlan]:
    """``n`` random plans (same seed, same plans); times rounded to the millisecond."""
    if n < 0:
        raise SimulatorConfigError(f"n must be >= 0: {n}")
    for name, values in (("accounts", accounts), ("callees", callees), ("outcomes", outcomes)):
        if not values:
            raise SimulatorConfigError(f"{name} must not be empty")
    for name, (low, high) in (("talk_range", talk_range), ("ring_range", ring_range)):
        if not 0 <= low <= high:
            raise SimulatorConfigError(f"{name} must be 0 <= low <= high: {(low, high)}")
    rng = random.Random(rng_seed)
    return [
        CallPlan(
            account=rng.choice(accounts),
            caller=f"1555{rng.randrange(10**7):07d}",
            callee=rng.choice(callees),
            ring_seconds=round(rng.uniform(*ring_range), 3),
            talk_seconds=round(rng.uniform(*talk_range), 3),
            outcome=rng.choice(outcomes),
            authorize=authorize,
        )
        for _ in range(n)
    ]
