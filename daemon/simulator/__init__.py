"""The built-in Asterisk simulator: a fake Asterisk speaking real AMI and real FastAGI.

``ratekeeper demo`` runs the daemon against it over loopback, and the benchmarks use it
as the load generator. ``SimulatedAsterisk`` serves AMI (server side), asks the daemon's
FastAGI server to authorize each call (client side) and emits each call's events like
the real Asterisk 22 traces; ``run_calls`` / ``make_plans`` drive many calls at a rate.

Errors (defined in ``daemon.simulator.asterisk``)::

    SimulatorError               (code SIMULATOR_ERROR)
    ├── SimulatorNotStarted      (SIMULATOR_NOT_STARTED)
    └── SimulatorConfigError     (SIMULATOR_CONFIG, also a ValueError)
"""

from __future__ import annotations

from daemon.simulator.agi_client import AgiResult, run_fastagi
from daemon.simulator.ami_server import AmiServer
from daemon.simulator.asterisk import (
    CallOutcome,
    CallPlan,
    SimulatedAsterisk,
    SimulatorConfigError,
    SimulatorError,
    SimulatorNotStarted,
)
from daemon.simulator.loadgen import make_plans, run_calls

__all__ = [
    "AgiResult",
    "AmiServer",
    "CallOutcome",
    "CallPlan",
    "SimulatedAsterisk",
    "SimulatorConfigError",
    "SimulatorError",
    "SimulatorNotStarted",
    "make_plans",
    "run_calls",
    "run_fastagi",
]
