"""Which tenant an agent seat belongs to: a pure lookup shared by the seat translators.

The first rule that names a tenant wins:

1. ``account``: the AccountCode of the seat's login channel (Asterisk ``AgentLogin``);
2. ``by_agent``: the exact seat id (``Agent:1001``, ``Local/1002@agents/n``,
   ``1001@default``);
3. ``by_queue``: the first of the seat's queues (in the order the seat joined them) that
   has a rule (Asterisk ``support``, FreeSWITCH ``support@default``);
4. ``by_domain``: the seat's domain (:func:`seat_domain`): the part after ``@`` of a
   FreeSWITCH agent name, the context of an Asterisk ``Local/x@context/n`` interface;
5. else ``""`` (no tenant known).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


def seat_domain(agent: str) -> str:
    """The domain of a seat id: ``1001@default`` -> ``default``,
    ``Local/1002@agents/n`` -> ``agents``; ``""`` when it has no ``@``."""
    _, at, rest = agent.partition("@")
    if not at:
        return ""
    return rest.partition("/")[0]


def _frozen(rules: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(rules))


@dataclass(frozen=True, slots=True)
class SeatTenantRules:
    """The configured seat -> tenant rules (see the module docstring for precedence)."""

    by_agent: Mapping[str, str] = field(default_factory=dict)
    by_queue: Mapping[str, str] = field(default_factory=dict)
    by_domain: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("by_agent", "by_queue", "by_domain"):  # read-only private copies
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def tenant_for(self, agent: str, *, account: str = "", queues: Iterable[str] = ()) -> str:
        """The tenant of seat ``agent``: login account, then agent, queue, domain rules."""
        if account:
            return account
        tenant = self.by_agent.get(agent)
        if tenant:
            return tenant
        for queue in queues:
            tenant = self.by_queue.get(queue)
            if tenant:
                return tenant
        domain = seat_domain(agent)
        return self.by_domain.get(domain, "") if domain else ""
