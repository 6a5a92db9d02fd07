"""Our own sd_notify(3): READY, STATUS, RELOADING, STOPPING and WATCHDOG to systemd.

With ``Type=notify`` systemd gives the service an AF_UNIX datagram socket in
``$NOTIFY_SOCKET``: a filesystem path, or an abstract name written ``@name``. Every
message is one datagram of newline-separated ``KEY=VALUE`` assignments. Without
``$NOTIFY_SOCKET`` (run by hand, in most tests) every call is a no-op.

Sending never raises: a daemon must not stop billing because systemd's socket went
away. The first failure is logged at WARNING, later ones only counted (``failures``).

``watchdog_interval()`` reads ``$WATCHDOG_USEC`` as sd_watchdog_enabled(3) does: it
counts only when ``$WATCHDOG_PID`` is unset or names this process.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Messages to systemd's notification socket (a no-op without one).

    Named apart from ``daemon.notifications.Notifier`` (the events out to MQTT/webhooks).
    ``watchdog_interval`` is the watchdog timeout in seconds systemd expects pings
    within, None when the watchdog is off.
    """

    def __init__(self, address: str | None, *, watchdog_interval: float | None = None) -> None:
        self.address = address or None
        self.watchdog_interval = watchdog_interval
        self.failures = 0
        self._socket: socket.socket | None = None

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None
    ) -> SystemdNotifier:
        """The notifier systemd asked for through ``$NOTIFY_SOCKET`` / ``$WATCHDOG_USEC``."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), watchdog_interval=watchdog_interval(env, pid=pid))

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one datagram; True when it was sent."""
        if self.address is None or not assignments:
            return False
        data = "\n".join(assignments).encode("utf-8")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(data, _socket_address(self.address))
        except OSError as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning(
                    "systemd notification failed (later failures are not logged)",
                    notify_socket=self.address,
                    message=assignments[0].partition("=")[0],
                    error=str(exc),
                )
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """``READY=1`` (start-up or reload finished), with a STATUS line when given."""
        return self.notify("READY=1", *_status(status))

    def reloading(self, status: str = "") -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (systemd 253+ relates it to the reload)."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now}", *_status(status))

    def stopping(self, status: str = "") -> bool:
        """``STOPPING=1``: the service is shutting down."""
        return self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        """``STATUS=...``: one free-form line ``systemctl status`` shows."""
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: keep the watchdog from firing."""
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket (a later message opens it again)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(
    environ: Mapping[str, str] | None = None, *, pid: int | None = None
) -> float | None:
    """Seconds of ``$WATCHDOG_USEC`` when the watchdog is meant for this process, else None.

    None when unset, not a positive integer, or when ``$WATCHDOG_PID`` names another
    process (``pid`` defaults to ``os.getpid()``).
    """
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(raw) / 1_000_000


def _socket_address(address: str) -> str | bytes:
    """An abstract ``@name`` as the kernel wants it (a leading NUL), a path as is."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode("utf-8")
    return address


def _status(text: str) -> tuple[str, ...]:
    """The STATUS assignment of ``text`` on one line (none for an empty text)."""
    line = " ".join(text.split())
    return (f"STATUS={line}",) if line else ()
