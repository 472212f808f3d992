"""The accounts an ingress process answers for, reloaded from SMSC_ACCOUNTS_FILE on SIGHUP."""

from __future__ import annotations

import structlog

from smsc import logs
from smsc.accounts import Accounts, load
from smsc.exceptions import ConfigError
from smsc.settings import Settings

log = structlog.get_logger("smsc.ingress")


class AccountBook:
    """The current accounts. A request looks its account up once, when it arrives, and keeps that
    one to the end: a reload meanwhile changes nothing for it."""

    def __init__(self, settings: Settings, accounts: Accounts) -> None:
        self._settings = settings
        self.current = accounts

    def reload(self) -> None:
        """Read the file again; if it cannot be used, keep the accounts as they are and say why."""
        try:
            accounts = load(self._settings)
        except ConfigError as e:
            # The reason names the file and the line, never a secret (smsc/accounts.py).
            log.error("accounts_reload_failed", reason=e.reason, kept=sorted(self.current.by_name))
            return
        logs.hide(accounts.secrets)
        self.current = accounts
        log.info("accounts_reloaded", accounts=sorted(accounts.by_name))
