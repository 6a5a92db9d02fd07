"""Builds the connector of each configured switch (Asterisk AMI, FreeSWITCH ESL)."""

from __future__ import annotations

from connectors.seat_tenants import SeatTenantRules
from daemon.asterisk_connector import AsteriskConnector
from daemon.authorization import Authorizer
from daemon.connector_base import ConnectorBase
from daemon.connector_types import EventHandler, Resyncer
from daemon.freeswitch_connector import FreeSwitchConnector
from daemon.settings import SwitchSettings

__all__ = ["Resyncer", "SwitchConnector", "build_connector"]

SwitchConnector = ConnectorBase
"""What the composition root needs of any switch connector (both kinds share the base)."""


def build_connector(
    settings: SwitchSettings,
    handler: EventHandler,
    *,
    resync: Resyncer | None = None,
    authorizer: Authorizer | None = None,
    seat_rules: SeatTenantRules | None = None,
) -> SwitchConnector:
    """The connector for one configured switch."""
    if settings.kind == "asterisk":
        return AsteriskConnector(settings, handler, resync=resync, seat_rules=seat_rules)
    return FreeSwitchConnector(
        settings, handler, resync=resync, authorizer=authorizer, seat_rules=seat_rules
    )
