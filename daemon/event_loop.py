"""The event loop the daemon runs on: uvloop when installed (``auto``), or plain asyncio.

The setting ``event_loop`` (top level of the TOML file, ``RATEKEEPER_EVENT_LOOP``):
``auto`` (the default, as uvicorn's ``--loop auto``), ``uvloop`` (an error when it is
not installed) or ``asyncio``; ``ratekeeper run`` reads it, ``ratekeeper demo`` runs on
``auto``, the one-shot commands on asyncio. uvloop's C event loop schedules callbacks
and moves socket bytes for a fraction of asyncio's CPU: measured on the whole
authorization stack (``bench/bench_auth_stack.py --daemon-loop``), the daemon needs
~15-20 % less CPU per HTTP authorization on it.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]


class EventLoopUnavailable(RuntimeError):
    """``event_loop = "uvloop"`` was asked for, and uvloop is not installed."""

    code = "EVENT_LOOP_UNAVAILABLE"


def resolve(choice: EventLoopChoice) -> Literal["uvloop", "asyncio"]:
    """The loop ``choice`` means on this machine."""
    if choice == "asyncio":
        return "asyncio"
    if importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    if choice == "uvloop":
        raise EventLoopUnavailable("event_loop = 'uvloop', but uvloop is not installed")
    return "asyncio"


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice = "auto") -> T:
    """Run ``main`` to completion on a new loop of ``choice`` (as ``asyncio.run``)."""
    if resolve(choice) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop this coroutine runs on (for the logs)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
