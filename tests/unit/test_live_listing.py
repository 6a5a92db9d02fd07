"""Channel listings -> LiveCall rows (resync input), from a recorded Asterisk listing and
FreeSWITCH-shaped ``show channels as json`` rows."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from connectors.ami.listing import live_calls_from_listing
from connectors.ami.parser import AMIMessage, AMIParser
from connectors.esl.listing import live_calls_from_rows

NOW = Decimal("1795630773")


def _recorded_listing(fixtures_dir: Path) -> list[AMIMessage]:
    data = (fixtures_dir / "asterisk" / "core_show_channels.ami").read_bytes()
    items = AMIParser().feed(data)
    return [m for m in items if isinstance(m, AMIMessage) and m.name == "CoreShowChannel"]


def test_given_recorded_core_show_channels_then_one_live_call_per_linkedid(
    fixtures_dir: Path,
) -> None:
    facts = json.loads((fixtures_dir / "asterisk" / "core_show_channels.json").read_text())
    calls = live_calls_from_listing(_recorded_listing(fixtures_dir), NOW)

    by_id = {call.call_id: call for call in calls}
    assert set(by_id) == {f["linkedid"] for f in facts["billing_facts"]}
    for fact in facts["billing_facts"]:
        call = by_id[fact["linkedid"]]
        assert call.channel == fact["a_leg"]  # the channel running Dial, as the translator
        assert call.account == fact["accountcode"]
        assert call.callee == fact["callee"]
        assert call.answered  # all three are up and bridged
        assert call.leg_id in fact["uniqueids"]


def test_given_channels_without_dial_then_first_channel_bills_and_duration_dates_start() -> None:
    item = AMIMessage(
        Channel="PJSIP/100-00000001",
        ChannelStateDesc="Ring",
        Uniqueid="1.1",
        Linkedid="1.1",
        AccountCode="acme",
        CallerIDNum="100",
        Exten="200",
        Application="Playback",
        Duration="00:01:05",
        BridgeId="",
    )
    (call,) = live_calls_from_listing([item], NOW)
    assert (call.call_id, call.leg_id, call.answered) == ("1.1", "1.1", False)
    assert call.started_at == NOW - 65


def _row(**fields: str) -> dict[str, str]:
    base = {
        "uuid": "",
        "direction": "inbound",
        "created_epoch": "1795630900",
        "name": "",
        "state": "CS_EXECUTE",
        "cid_num": "1000",
        "dest": "15551234567",
        "accountcode": "",
        "callstate": "ACTIVE",
        "call_uuid": "",
        "initial_cid_num": "1000",
        "initial_dest": "15551234567",
    }
    return {**base, **fields}


def test_given_freeswitch_rows_then_only_billing_legs_with_an_account_are_calls() -> None:
    rows = [
        _row(uuid="a", name="loopback/15551234567-a", accountcode="tenant-a", cid_num="default"),
        _row(uuid="b", name="loopback/15551234567-b", accountcode="tenant-a"),
        _row(uuid="s", name="sofia/local/1555@127.0.0.1", direction="outbound", call_uuid="b"),
        _row(uuid="f", name="sofia/local/1000@127.0.0.1"),  # far end, no account
        _row(uuid="r", name="sofia/internal/2000@pbx", accountcode="tenant-b", callstate="RINGING"),
    ]
    calls = {call.call_id: call for call in live_calls_from_rows(rows, NOW)}
    assert set(calls) == {"a", "r"}
    assert calls["a"].caller == "1000"  # the initial caller id, not the flipped one
    assert calls["a"].answered and not calls["r"].answered
    assert calls["a"].started_at == Decimal("1795630900")
    assert calls["a"].channel == "a"  # uuid_kill takes the uuid
