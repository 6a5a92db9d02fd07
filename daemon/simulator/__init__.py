"""The built-in switch simulators: a fake Asterisk (real AMI + real FastAGI) and a fake
FreeSWITCH (real ESL + real mod_xml_curl HTTP, or ESL park authorization).

``ratekeeper demo`` runs the daemon against both over loopback, and the load generator
drives them. ``SimulatedAsterisk`` serves AMI (server side), asks the daemon's FastAGI
server to authorize each call (client side) and emits each call's events like the real
Asterisk 22 traces; ``SimulatedFreeSWITCH`` serves ESL, posts the xml_curl dialplan lookup
(or parks the call) and emits events like the FreeSWITCH 1.10 traces; ``run_calls`` /
``make_plans`` drive many calls at a rate through either.

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
from daemon.simulator.freeswitch import SimulatedFreeSWITCH
from daemon.simulator.loadgen import make_plans, run_calls

__all__ = [
    "AgiResult",
    "AmiServer",
    "CallOutcome",
    "CallPlan",
    "SimulatedAsterisk",
    "SimulatedFreeSWITCH",
    "SimulatorConfigError",
    "SimulatorError",
    "SimulatorNotStarted",
    "make_plans",
    "run_calls",
    "run_fastagi",
]
