"""``ratekeeper demo`` on embedded defaults: its story happens and the books balance."""

from __future__ import annotations

from pathlib import Path

from daemon.demo import run_demo


async def test_given_embedded_defaults_when_demo_runs_then_every_expectation_holds(
    tmp_path: Path,
) -> None:
    assert await run_demo(state_dir=tmp_path) is True
