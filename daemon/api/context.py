"""What the management API's routes work with, built once by ``build_api``.

The routes find it on ``request.app.state.api`` through the :func:`api_context`
dependency: no module-level clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from balance.accounts import Account, AccountStore
from balance.api_keys import ApiKeyStore
from balance.ledger import Ledger
from balance.live import LiveState
from daemon.account_admin import AccountAdmin
from daemon.account_directory import AccountDirectory
from daemon.api.scope import AccountScope


@dataclass(frozen=True, slots=True)
class ApiContext:
    """The API's collaborators: SQL stores, the live state and the account admin."""

    accounts: AccountStore
    ledger: Ledger
    keys: ApiKeyStore
    scope: AccountScope
    live: LiveState
    admin: AccountAdmin
    directory: AccountDirectory | None = None

    def changed(self, account: Account) -> None:
        """Tell the daemon's account cache (when there is one) about a change."""
        if self.directory is not None:
            self.directory.put(account)


def api_context(request: Request) -> ApiContext:
    """The ``ApiContext`` of the app serving ``request``."""
    context = getattr(request.app.state, "api", None)
    if not isinstance(context, ApiContext):
        raise RuntimeError("the management API app was built without build_api()")
    return context
