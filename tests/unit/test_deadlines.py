"""``Deadlines``: one shared timer bounds every request; only the overdue ones are cut."""

from __future__ import annotations

import asyncio

import pytest

from daemon.deadlines import Deadlines


async def _answer(value: str, after: float) -> str:
    await asyncio.sleep(after)
    return value


async def test_given_a_quick_request_when_run_then_its_answer_comes_back() -> None:
    deadlines = Deadlines(1.0)
    assert await deadlines.run(_answer("ok", 0)) == "ok"
    assert deadlines.in_flight == 0


async def test_given_a_request_past_the_limit_when_run_then_timeout_error_and_others_unharmed() -> (
    None
):
    deadlines = Deadlines(0.2)
    slow = asyncio.create_task(deadlines.run(_answer("slow", 30)))
    await asyncio.sleep(0.1)
    later = asyncio.create_task(deadlines.run(_answer("later", 0.15)))  # ends at ~0.25 s

    with pytest.raises(TimeoutError, match=r"no answer within 0\.2 s"):
        await slow
    assert await later == "later"  # started later: its own deadline, not cut with slow
    assert deadlines.in_flight == 0
    await asyncio.sleep(0.1)  # the check that finds nothing in flight does not re-arm
    assert deadlines._check is None


async def test_given_the_caller_cancelled_when_running_then_cancelled_error_not_timeout() -> None:
    deadlines = Deadlines(5.0)
    task = asyncio.create_task(deadlines.run(_answer("never", 30)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines.in_flight == 0


async def test_given_a_cut_request_when_its_task_goes_on_then_it_is_not_cancelled_again() -> None:
    deadlines = Deadlines(0.05)

    async def request() -> str:
        try:
            await deadlines.run(_answer("slow", 30))
        except TimeoutError:
            await asyncio.sleep(0.2)  # e.g. answering 503 to the client, past more checks
            return "answered"
        return "not cut"

    assert await request() == "answered"


def test_given_a_non_positive_timeout_when_made_then_error_names_it() -> None:
    with pytest.raises(ValueError, match=r"timeout must be positive, got 0"):
        Deadlines(0)


class Watched:
    """A request run from callbacks: counts how often it was cut."""

    def __init__(self) -> None:
        self.cut = 0

    def cancel(self) -> None:
        self.cut += 1


async def test_given_watched_requests_when_one_is_past_the_limit_then_only_it_is_cut_once() -> None:
    deadlines = Deadlines(0.1)
    slow, quick = Watched(), Watched()
    deadlines.watch(slow)
    deadlines.watch(quick)
    deadlines.forget(quick)  # answered in time

    await asyncio.sleep(0.3)  # several checks past the limit

    assert (slow.cut, quick.cut) == (1, 0)
    assert deadlines.in_flight == 0


async def test_given_watched_and_run_requests_when_both_overdue_then_each_cut_its_way() -> None:
    deadlines = Deadlines(0.1)
    watched = Watched()
    deadlines.watch(watched)
    running = asyncio.create_task(deadlines.run(_answer("slow", 30)))

    with pytest.raises(TimeoutError):
        await running
    await asyncio.sleep(0.05)

    assert watched.cut == 1 and deadlines.in_flight == 0
