"""Errors of the ESL connector, each with a stable code.

ESLError                    ESL_ERROR
├── ESLAuthenticationError  ESL_AUTHENTICATION_FAILED  (``auth`` answered ``-ERR invalid``)
├── ESLConnectionLost       ESL_CONNECTION_LOST  (no connection, or it dropped while a
│                                                 command was pending; never replayed)
├── ESLProtocolError        ESL_PROTOCOL_ERROR  (no ``auth/request``, an unreadable answer)
└── ESLCommandError         ESL_COMMAND_FAILED  (``-ERR`` answer, or no answer in time)

Messages never carry the password.
"""

from __future__ import annotations


class ESLError(Exception):
    """Base of every ESL connector error."""

    code = "ESL_ERROR"


class ESLAuthenticationError(ESLError):
    """The switch refused the ``auth`` command (wrong password)."""

    code = "ESL_AUTHENTICATION_FAILED"


class ESLConnectionLost(ESLError):
    """Not connected, or the connection dropped before the answer came."""

    code = "ESL_CONNECTION_LOST"


class ESLProtocolError(ESLError):
    """The peer does not speak ESL as expected (no greeting, an answer we cannot read)."""

    code = "ESL_PROTOCOL_ERROR"


class ESLCommandError(ESLError):
    """A command was answered ``-ERR ...`` or got no answer within its timeout."""

    code = "ESL_COMMAND_FAILED"

    def __init__(self, message: str, reply: str = "") -> None:
        super().__init__(message)
        self.reply = reply
