"""The accounts an ingress process answers for, reloaded from SMSC_ACCOUNTS_FILE on SIGHUP."""

from __future__ import annotations

from smsc.accounts import Accounts, reload
from smsc.settings import Settings


class AccountBook:
    """The current accounts. A request looks its account up once, when it arrives, and keeps that
    one to the end: a reload meanwhile changes nothing for it."""

    def __init__(self, settings: Settings, accounts: Accounts) -> None:
        self._settings = settings
        self.current = accounts

    def reload(self) -> None:
        """Read the file again; if it cannot be used, keep the accounts as they are (logged)."""
        self.current = reload(self._settings, self.current)
