"""Seat translators (AMI, ESL) and tenant rules on hand-made messages and listings."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.ami.parser import AMIMessage
from connectors.ami.seats import AMISeatTranslator
from connectors.esl.parser import ESLEvent
from connectors.esl.seats import ESLSeatTranslator, logoff_command, parse_agent_list
from connectors.events import AgentLoggedIn, AgentLoggedOut, Event
from connectors.seat_tenants import SeatTenantRules, seat_domain

AGENT = "Agent:1001"
LOCAL = "Local/1002@agents/n"
NO_RULES = SeatTenantRules()


def ev(name: str, ts: str | None, **fields: str) -> AMIMessage:
    msg = AMIMessage(Event=name)
    if ts is not None:
        msg["Timestamp"] = ts
    msg.update(fields)
    return msg


def added(ts: str, queue: str, interface: str = LOCAL, state: str = "", **extra: str) -> AMIMessage:
    fields = {"Queue": queue, "MemberName": "Seat", "Interface": interface}
    fields.update(StateInterface=state or interface, Paused="0", PausedReason="")
    fields.update(extra)
    return ev("QueueMemberAdded", ts, **fields)


def removed(ts: str, queue: str, interface: str = LOCAL, state: str = "") -> AMIMessage:
    return ev(
        "QueueMemberRemoved",
        ts,
        Queue=queue,
        Interface=interface,
        StateInterface=state or interface,
    )


def paused(ts: str, queue: str, flag: str, reason: str = "") -> AMIMessage:
    fields = {"Queue": queue, "Interface": LOCAL, "StateInterface": LOCAL}
    return ev("QueueMemberPause", ts, **fields, Paused=flag, PausedReason=reason)


def login(ts: str, account: str = "") -> AMIMessage:
    return ev("AgentLogin", ts, Agent="1001", AccountCode=account, CallerIDName="Agent 1001")


def logoff(ts: str) -> AMIMessage:
    return ev("AgentLogoff", ts, Agent="1001", Logintime="19")


AGENT_MEMBER = {"interface": "Local/1001@agent-request/n", "state": AGENT}


def feed(tr: AMISeatTranslator, *msgs: AMIMessage) -> list[Event]:
    return [event for msg in msgs for event in tr.feed(msg)]


def seat_in(agent: str, at: str, tenant: str = "", name: str = "Seat") -> AgentLoggedIn:
    return AgentLoggedIn(switch_id="pbx", tenant=tenant, agent=agent, at=Decimal(at), name=name)


def seat_out(agent: str, at: str, tenant: str = "") -> AgentLoggedOut:
    return AgentLoggedOut(switch_id="pbx", tenant=tenant, agent=agent, at=Decimal(at))


# -- tenant rules --------------------------------------------------------------------


def test_given_every_rule_matching_when_resolved_then_precedence_account_agent_queue_domain() -> (
    None
):
    rules = SeatTenantRules(
        by_agent={LOCAL: "by-agent"},
        by_queue={"sales": "by-sales", "support": "by-support"},
        by_domain={"agents": "by-domain"},
    )
    queues = ("unmapped", "support", "sales")
    assert rules.tenant_for(LOCAL, account="acct", queues=queues) == "acct"
    assert rules.tenant_for(LOCAL, queues=queues) == "by-agent"
    assert rules.tenant_for("Local/1003@agents/n", queues=queues) == "by-support"  # first mapped
    assert rules.tenant_for("Local/1003@agents/n", queues=("unmapped",)) == "by-domain"
    assert rules.tenant_for("PJSIP/1003", queues=("unmapped",)) == ""


def test_given_seat_ids_when_domain_taken_then_after_at_up_to_slash() -> None:
    assert seat_domain("1001@default") == "default"
    assert seat_domain("Local/1002@agents/n") == "agents"
    assert seat_domain("PJSIP/1002") == ""
    assert seat_domain(AGENT) == ""


def test_given_rules_from_a_dict_when_dict_changes_later_then_rules_do_not() -> None:
    source = {"support": "tenant-a"}
    rules = SeatTenantRules(by_queue=source)
    source["support"] = "tenant-z"
    assert rules.tenant_for(LOCAL, queues=["support"]) == "tenant-a"
    with pytest.raises(TypeError):
        rules.by_queue["sales"] = "x"  # type: ignore[index]


# -- AMI: one seat per person --------------------------------------------------------


def test_given_member_of_three_queues_when_removed_one_by_one_then_one_seat_session() -> None:
    tr = AMISeatTranslator("pbx", NO_RULES)
    joined = feed(tr, added("10.5", "support"), added("11.0", "sales"), added("12.0", "billing"))
    assert joined == [seat_in(LOCAL, "10.5")]
    assert tr.present() == {LOCAL: ""}
    assert feed(tr, removed("20.0", "sales"), removed("21.0", "support")) == []
    assert tr.present() == {LOCAL: ""}
    assert feed(tr, removed("22.250001", "billing")) == [seat_out(LOCAL, "22.250001")]
    assert tr.present() == {}


def test_given_membership_then_login_when_logoff_then_removal_then_out_at_last_absence() -> None:
    tr = AMISeatTranslator("pbx", SeatTenantRules(by_queue={"support": "tenant-a"}))
    events = feed(
        tr,
        added("48.361765", "support", **AGENT_MEMBER, MemberName="Agent 1001"),
        login("48.361794", account="tenant-a"),
        logoff("67.884995"),
    )
    assert events == [seat_in(AGENT, "48.361765", "tenant-a", "Agent 1001")]
    assert tr.present() == {AGENT: "tenant-a"}  # the membership still holds the seat
    out = feed(tr, removed("67.885014", "support", **AGENT_MEMBER))
    assert out == [seat_out(AGENT, "67.885014", "tenant-a")]


def test_given_login_then_membership_when_removal_then_logoff_then_out_at_logoff() -> None:
    tr = AMISeatTranslator("pbx", NO_RULES)
    events = feed(
        tr,
        login("5.0", account="acme"),
        added("5.5", "support", **AGENT_MEMBER),
        removed("9.0", "support", **AGENT_MEMBER),
    )
    assert events == [seat_in(AGENT, "5.0", "acme", "Agent 1001")]
    assert feed(tr, logoff("9.5")) == [seat_out(AGENT, "9.5", "acme")]


def test_given_paused_member_when_paused_and_unpaused_then_seat_kept_and_pause_queryable() -> None:
    tr = AMISeatTranslator("pbx", NO_RULES)
    feed(tr, added("1.0", "support"), added("1.1", "sales"))
    assert feed(tr, paused("2.0", "support", "1", "break")) == []
    assert tr.paused(LOCAL) == {"support": "break"}
    assert tr.present() == {LOCAL: ""}
    assert feed(tr, paused("3.0", "support", "0")) == []
    assert tr.paused(LOCAL) == {}
    assert tr.paused("PJSIP/unknown") == {}


def test_given_member_added_paused_when_queried_then_paused_from_the_start() -> None:
    tr = AMISeatTranslator("pbx", NO_RULES)
    feed(tr, added("1.0", "support", Paused="1", PausedReason="lunch"))
    assert tr.paused(LOCAL) == {"support": "lunch"}


# -- AMI: duplicates, stale events, list items ---------------------------------------


def test_given_every_event_twice_when_fed_then_one_login_and_one_logout() -> None:
    tr = AMISeatTranslator("pbx", NO_RULES)
    msgs = [
        added("1.0", "support", **AGENT_MEMBER),
        login("1.1", "acme"),
        logoff("5.0"),
        removed("5.1", "support", **AGENT_MEMBER),
    ]
    events = feed(tr, *(msg for msg in msgs for _ in range(2)))
    assert events == [
        seat_in(AGENT, "1.0", name="Seat"),
        seat_out(AGENT, "1.1"),  # the login's AccountCode moves the seat to its tenant
        seat_in(AGENT, "1.1", "acme", "Seat"),
        seat_out(AGENT, "5.1", "acme"),
    ]


def test_given_add_resent_after_its_removal_when_fed_then_stale_add_ignored() -> None:
    tr = AMISeatTranslator("pbx", NO_RULES)
    feed(tr, added("1.0", "support"), removed("2.0", "support"))
    assert feed(tr, added("1.0", "support")) == []  # the old add, re-sent
    assert tr.present() == {}
    assert feed(tr, added("3.0", "support")) == [seat_in(LOCAL, "3.0")]  # a real re-add


def test_given_removal_older_than_the_add_when_fed_then_ignored() -> None:
    tr = AMISeatTranslator("pbx", NO_RULES)
    feed(tr, added("5.0", "support"))
    assert feed(tr, removed("4.9", "support"), logoff("4.0")) == []
    assert tr.present() == {LOCAL: ""}


def test_given_list_items_with_action_id_when_fed_then_ignored() -> None:
    tr = AMISeatTranslator("pbx", NO_RULES)
    item = AMIMessage(Event="QueueMember", Queue="support", Location=LOCAL, ActionID="x-7")
    item.update(StateInterface=LOCAL, Name="Seat", Paused="0")
    agents = AMIMessage(Event="Agents", Agent="1001", Status="AGENT_IDLE", ActionID="x-3")
    assert feed(tr, item, agents) == []
    assert tr.present() == {}


def test_given_events_without_timestamp_when_fed_then_last_seen_else_clock() -> None:
    tr = AMISeatTranslator("pbx", NO_RULES, clock=lambda: Decimal("99.5"))
    assert feed(tr, added("", "support")) == [seat_in(LOCAL, "99.5")]
    feed(tr, added("100.25", "sales"))
    assert feed(
        tr, removed("", "support"), ev("QueueMemberRemoved", None, Queue="sales", Interface=LOCAL)
    ) == [seat_out(LOCAL, "100.25")]


# -- AMI: tenants ---------------------------------------------------------------------


def test_given_login_account_when_queue_rule_differs_then_account_wins() -> None:
    tr = AMISeatTranslator("pbx", SeatTenantRules(by_queue={"support": "tenant-q"}))
    assert feed(tr, login("1.0", "tenant-l"), added("1.1", "support", **AGENT_MEMBER)) == [
        seat_in(AGENT, "1.0", "tenant-l", "Agent 1001")
    ]
    assert tr.present() == {AGENT: "tenant-l"}


def test_given_membership_first_when_login_names_other_tenant_then_seat_moves() -> None:
    tr = AMISeatTranslator("pbx", SeatTenantRules(by_queue={"support": "tenant-q"}))
    events = feed(tr, added("1.0", "support", **AGENT_MEMBER), login("1.2", "tenant-l"))
    assert events == [
        seat_in(AGENT, "1.0", "tenant-q"),
        seat_out(AGENT, "1.2", "tenant-q"),
        seat_in(AGENT, "1.2", "tenant-l"),
    ]
    # the login account stays the seat's tenant after logoff, while a membership remains
    assert feed(tr, logoff("2.0"), added("2.1", "sales", **AGENT_MEMBER)) == []
    assert tr.present() == {AGENT: "tenant-l"}


def test_given_local_member_when_no_agent_or_queue_rule_then_tenant_from_context() -> None:
    rules = SeatTenantRules(by_domain={"agents": "tenant-d"}, by_queue={"sales": "tenant-s"})
    tr = AMISeatTranslator("pbx", rules)
    assert feed(tr, added("1.0", "support")) == [seat_in(LOCAL, "1.0", "tenant-d")]
    # a later queue with a rule outranks the context: the seat moves
    assert feed(tr, added("2.0", "sales")) == [
        seat_out(LOCAL, "2.0", "tenant-d"),
        seat_in(LOCAL, "2.0", "tenant-s"),
    ]


# -- AMI: listing reconciliation -----------------------------------------------------


def listing_member(queue: str, location: str, state: str, paused_flag: str = "0") -> AMIMessage:
    item = AMIMessage(Event="QueueMember", Queue=queue, Name="Listed", Location=location)
    item.update(StateInterface=state, Paused=paused_flag, PausedReason="", ActionID="rk-1")
    return item


def listing_agent(number: str, status: str, account: str = "") -> AMIMessage:
    item = AMIMessage(Event="Agents", Agent=number, Name=f"Agent {number}", Status=status)
    item.update(AccountCode=account, ActionID="rk-2")
    return item


def test_given_listing_when_adopted_then_unknown_in_absent_out_known_kept() -> None:
    rules = SeatTenantRules(by_domain={"agents": "tenant-d"})
    tr = AMISeatTranslator("pbx", rules)
    feed(tr, added("1.0", "support"), added("1.1", "support", "PJSIP/gone"))
    now = Decimal("50.000001")
    items = [
        AMIMessage(Event="QueueParams", Queue="support", ActionID="rk-1"),
        listing_member("support", "Local/1001@agent-request/n", AGENT),
        listing_member("sales", LOCAL, LOCAL, paused_flag="1"),
        listing_agent("1001", "AGENT_ONCALL", account="acme"),
        listing_agent("1009", "AGENT_LOGGEDOFF"),
        AMIMessage(Event="QueueStatusComplete", ListItems="3", ActionID="rk-1"),
    ]
    events = tr.adopt_listing(items, now)
    assert events == [
        AgentLoggedOut(switch_id="pbx", tenant="", agent="PJSIP/gone", at=now),
        AgentLoggedIn(switch_id="pbx", tenant="acme", agent=AGENT, at=now, name="Listed"),
    ]
    assert tr.present() == {LOCAL: "tenant-d", AGENT: "acme"}
    assert tr.paused(LOCAL) == {"sales": ""}
    # the listed memberships replaced the known ones: only sales remains for LOCAL
    assert tr.logoff_actions(LOCAL) == [
        {"Action": "QueueRemove", "Queue": "sales", "Interface": LOCAL}
    ]
    assert tr.adopt_listing(items[:4], now) == []  # nothing changed: nothing to say
    assert feed(tr, removed("51.0", "support")) == []
    assert feed(tr, removed("52.0", "sales")) == [seat_out(LOCAL, "52.0", "tenant-d")]


def test_given_empty_listing_when_adopted_then_every_known_seat_out() -> None:
    tr = AMISeatTranslator("pbx", NO_RULES)
    feed(tr, added("1.0", "support"), login("1.5", "acme"))
    now = Decimal(9)
    assert tr.adopt_listing([], now) == [
        AgentLoggedOut(switch_id="pbx", tenant="", agent=LOCAL, at=now),
        AgentLoggedOut(switch_id="pbx", tenant="acme", agent=AGENT, at=now),
    ]
    assert tr.present() == {}


# -- AMI: logoff actions -------------------------------------------------------------


def test_given_agent_seat_in_two_queues_when_logoff_actions_then_logoff_and_queue_removes() -> None:
    tr = AMISeatTranslator("pbx", NO_RULES)
    feed(tr, added("1.0", "support", **AGENT_MEMBER), added("1.1", "sales", **AGENT_MEMBER))
    feed(tr, added("1.2", "support"))
    member = "Local/1001@agent-request/n"
    assert tr.logoff_actions(AGENT) == [
        {"Action": "AgentLogoff", "Agent": "1001"},
        {"Action": "QueueRemove", "Queue": "support", "Interface": member},
        {"Action": "QueueRemove", "Queue": "sales", "Interface": member},
    ]
    assert tr.logoff_actions(LOCAL) == [
        {"Action": "QueueRemove", "Queue": "support", "Interface": LOCAL}
    ]
    assert tr.logoff_actions("Agent:2002") == [{"Action": "AgentLogoff", "Agent": "2002"}]
    assert tr.logoff_actions("PJSIP/unknown") == []


# -- ESL ----------------------------------------------------------------------------------


def cc(action: str, ts: str, agent: str = "1001@default", **headers: str) -> ESLEvent:
    event = ESLEvent(
        {"Event-Name": "CUSTOM", "Event-Subclass": "callcenter::info", "Event-Date-Timestamp": ts}
    )
    event.update({"CC-Action": action, "CC-Agent": agent})
    event.update({key.replace("_", "-"): value for key, value in headers.items()})
    return event


def status(ts: str, value: str, agent: str = "1001@default") -> ESLEvent:
    return cc("agent-status-change", ts, agent, CC_Agent_Status=value)


def fs_in(at: str, tenant: str = "", agent: str = "1001@default") -> AgentLoggedIn:
    return AgentLoggedIn(switch_id="fs", tenant=tenant, agent=agent, at=Decimal(at))


def fs_out(at: str, tenant: str = "", agent: str = "1001@default") -> AgentLoggedOut:
    return AgentLoggedOut(switch_id="fs", tenant=tenant, agent=agent, at=Decimal(at))


def feed_esl(tr: ESLSeatTranslator, *events: ESLEvent) -> list[Event]:
    return [out for event in events for out in tr.feed(event)]


def test_given_status_sequence_when_fed_then_one_session_and_break_keeps_it() -> None:
    tr = ESLSeatTranslator("fs", SeatTenantRules(by_domain={"default": "tenant-a"}))
    events = feed_esl(
        tr,
        status("1795631005996386", "Logged Out"),  # not present yet: nothing
        status("1795631006996393", "Available"),
        status("1795631007996373", "On Break"),
    )
    assert events == [fs_in("1795631006.996393", "tenant-a")]
    assert tr.status("1001@default") == "On Break"
    more = feed_esl(
        tr,
        status("1795631008996373", "Available"),
        cc("agent-state-change", "1795631010096369", CC_Agent_State="In a queue call"),
    )
    assert more == []
    assert tr.state("1001@default") == "In a queue call"
    assert feed_esl(tr, status("1795631017336377", "Logged Out")) == [
        fs_out("1795631017.336377", "tenant-a")
    ]
    assert tr.present() == {} and tr.status("1001@default") == ""


def test_given_on_demand_and_repeats_when_fed_then_present_once_and_out_once() -> None:
    tr = ESLSeatTranslator("fs", NO_RULES)
    events = feed_esl(
        tr,
        status("1000000", "Available (On Demand)"),
        status("1000000", "Available (On Demand)"),
        status("2000000", "Logged Out"),
        status("2000000", "Logged Out"),
    )
    assert events == [fs_in("1.000000"), fs_out("2.000000")]


def test_given_late_older_status_when_fed_then_stale_and_ignored() -> None:
    tr = ESLSeatTranslator("fs", NO_RULES)
    feed_esl(tr, status("5000000", "Available"), status("7000000", "Logged Out"))
    assert feed_esl(tr, status("6000000", "Available")) == []
    assert tr.present() == {}


def test_given_other_events_and_statuses_when_fed_then_ignored() -> None:
    tr = ESLSeatTranslator("fs", NO_RULES)
    channel = ESLEvent({"Event-Name": "CHANNEL_ANSWER", "CC-Agent": "1001@default"})
    other = cc("agent-status-change", "1000000", CC_Agent_Status="Available")
    other["Event-Subclass"] = "conference::maintenance"
    odd = status("1000000", "Dancing")
    no_agent = status("1000000", "Available", agent="")
    assert feed_esl(tr, channel, other, odd, no_agent) == []
    assert tr.present() == {}


def test_given_queue_learned_from_offering_when_queue_rule_outranks_domain_then_seat_moves() -> (
    None
):
    rules = SeatTenantRules(
        by_domain={"default": "tenant-d"},
        by_queue={"support@default": "tenant-q"},
        by_agent={"2002@default": "tenant-x"},
    )
    tr = ESLSeatTranslator("fs", rules)
    assert feed_esl(tr, status("1000000", "Available")) == [fs_in("1.000000", "tenant-d")]
    offering = cc("agent-offering", "2000000", CC_Queue="support@default")
    assert feed_esl(tr, offering, offering) == [
        fs_out("2.000000", "tenant-d"),
        fs_in("2.000000", "tenant-q"),
    ]
    assert feed_esl(tr, status("3000000", "Available", "2002@default")) == [
        fs_in("3.000000", "tenant-x", "2002@default")
    ]
    assert (
        feed_esl(tr, cc("agent-offering", "4000000", "2002@default", CC_Queue="support@default"))
        == []
    )


def agent_lists(fixtures_dir: Path) -> dict[str, str]:
    meta = json.loads((fixtures_dir / "freeswitch" / "callcenter_agents.json").read_text())
    extra: dict[str, str] = meta["extra"]
    return extra


def test_given_recorded_agent_lists_when_adopted_then_in_then_out_at_listing_time(
    fixtures_dir: Path,
) -> None:
    lists = agent_lists(fixtures_dir)
    tr = ESLSeatTranslator("fs", SeatTenantRules(by_agent={"1001@default": "tenant-a"}))
    assert tr.adopt_listing(lists["agent_list_before"], Decimal(10)) == []  # Logged Out
    during = tr.adopt_listing(lists["agent_list_during_wrapup_or_after"], Decimal(20))
    assert during == [fs_in("20", "tenant-a")]
    assert tr.status("1001@default") == "Available"
    assert tr.adopt_listing(lists["agent_list_during_wrapup_or_after"], Decimal(25)) == []
    assert tr.adopt_listing(lists["agent_list_after"], Decimal(30)) == [fs_out("30", "tenant-a")]


def test_given_known_seat_missing_from_listing_when_adopted_then_out() -> None:
    tr = ESLSeatTranslator("fs", NO_RULES)
    feed_esl(tr, status("1000000", "On Break", agent="7@x"), status("1000000", "Available"))
    text = "name|status|state\n1001@default|Available|Waiting\n+OK\n"
    assert tr.adopt_listing(text, Decimal(5)) == [fs_out("5", agent="7@x")]
    assert tr.present() == {"1001@default": ""}


def test_given_contact_with_pipes_when_listing_parsed_then_status_read_from_the_end() -> None:
    text = (
        "name|type|contact|status|state\n"
        "a@d|callback|{x=1|y=2}loopback/2001|On Break|Waiting\n"
        "b@d|callback|user/b|Logged Out|Waiting\n"
        "+OK\n"
    )
    assert parse_agent_list(text) == {"a@d": "On Break", "b@d": "Logged Out"}


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("-ERR Unknown command\n", "not a table"),
        ("", "not a table"),
        ("name|state\n1001@default|Waiting\n+OK\n", "header lacks name|status"),
        ("name|type|status\n1001@default|callback\n+OK\n", "1001@default|callback"),
    ],
)
def test_given_bad_listing_when_parsed_then_value_error_names_the_culprit(
    text: str, culprit: str
) -> None:
    with pytest.raises(ValueError, match=culprit.replace("|", r"\|")):
        ESLSeatTranslator("fs", NO_RULES).adopt_listing(text, Decimal(1))


def test_given_agent_name_when_logoff_command_then_exact_recorded_command() -> None:
    tr = ESLSeatTranslator("fs", NO_RULES)
    expected = "callcenter_config agent set status 1001@default 'Logged Out'"
    assert tr.logoff_command("1001@default") == expected == logoff_command("1001@default")


@pytest.mark.parametrize(
    "agent",
    [
        "1001@default 'Available'",
        "1001@default\n\napi fsctl shutdown",
        "x'; api fsctl shutdown",
        'x"y',
        "a b",
        "a\tb",
        "a\\b",
        "a\x00b",
        "",
    ],
)
def test_given_unsafe_agent_name_when_logoff_command_then_refused_naming_it(agent: str) -> None:
    with pytest.raises(ValueError, match="unsafe callcenter agent name") as info:
        ESLSeatTranslator("fs", NO_RULES).logoff_command(agent)
    assert repr(agent) in str(info.value)
