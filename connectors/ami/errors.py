"""Errors of the AMI connector, each with a stable code.

AMIError                    AMI_ERROR
├── AMIAuthenticationError  AMI_AUTHENTICATION_FAILED  (Login answered Error)
├── AMIConnectionLost       AMI_CONNECTION_LOST  (no connection, or it dropped while
│                                                 an action was pending; never replayed)
├── AMIProtocolError        AMI_PROTOCOL_ERROR  (no banner, an unsendable field)
└── AMIActionError          AMI_ACTION_FAILED  (Response: Error, or no answer in time)
"""

from __future__ import annotations


class AMIError(Exception):
    """Base of every AMI connector error."""

    code = "AMI_ERROR"


class AMIAuthenticationError(AMIError):
    """The switch refused the Login (bad username or secret)."""

    code = "AMI_AUTHENTICATION_FAILED"


class AMIConnectionLost(AMIError):
    """Not connected, or the connection dropped before the answer came."""

    code = "AMI_CONNECTION_LOST"


class AMIProtocolError(AMIError):
    """The peer does not speak AMI, or an action cannot be encoded."""

    code = "AMI_PROTOCOL_ERROR"


class AMIActionError(AMIError):
    """An action failed (``Response: Error``) or got no answer within the timeout."""

    code = "AMI_ACTION_FAILED"

    def __init__(self, message: str, response: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.response = response
