"""``callbridge phonebook sync``: a full sync of CRM phones and users into the store,
with a progress bar on stderr (plain lines when stderr is not a terminal)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TextIO

from callbridge.routing.phonebook import Phonebook, SyncProgress, SyncReport
from callbridge.routing.settings import settings_from_config

__all__ = ["ProgressBar", "sync"]


class ProgressBar:
    """Draws ``stage [#####     ] n rows`` on one terminal line; the CRM does not say how
    many rows there are up front (``start=-1`` skips the count), so the bar cycles."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self._last_stage = ""
        self._started = time.monotonic()

    def __call__(self, progress: SyncProgress) -> None:
        if self.tty:
            filled = (progress.done // 50) % (self.width + 1)
            bar = "#" * filled + " " * (self.width - filled)
            self.stream.write(f"\r{progress.stage:<8} [{bar}] {progress.done:>8} rows")
            if progress.stage == "done":
                self.stream.write("\n")
        elif progress.stage != self._last_stage and self._last_stage:
            self.stream.write(f"{self._last_stage}: done\n")
        self._last_stage = progress.stage
        self.stream.flush()

    def summary(self, report: SyncReport) -> str:
        entities = ", ".join(f"{n} {t}s" for t, n in report.entities.items())
        return (
            f"phonebook: {report.users} users, {entities}; {report.removed} removed "
            f"in {time.monotonic() - self._started:.1f}s"
        )


async def _sync(config_path: str | None, stream: TextIO) -> int:
    from callbridge.config import load_config
    from callbridge.crm.bitrix24.adapter import Bitrix24Crm
    from callbridge.routing.source import Bitrix24PhonebookSource
    from callbridge.store.db import connect
    from callbridge.store.phonebook import PhonebookStore
    from callbridge.store.tokens import TokenStore

    config = load_config(config_path)
    settings = settings_from_config(config)
    conn = connect(config.store.path)
    crm = Bitrix24Crm.from_config(config.bitrix24, TokenStore(conn))
    try:
        book = Phonebook(
            PhonebookStore(conn),
            Bitrix24PhonebookSource(crm.client.call),
            region=settings.default_region,
            miss_ttl=settings.miss_ttl,
        )
        bar = ProgressBar(stream)
        report = await book.full_sync(bar)
        stream.write(bar.summary(report) + "\n")
    finally:
        await crm.close()
        conn.close()
    return 0


def sync(args: argparse.Namespace) -> int:
    """Entry point of ``callbridge phonebook sync``."""
    from callbridge.config import ConfigError
    from callbridge.crm.base import CrmError
    from callbridge.routing.settings import RoutingSettingsError

    try:
        return asyncio.run(_sync(getattr(args, "config", None), sys.stderr))
    except (ConfigError, RoutingSettingsError, ValueError) as exc:
        print(f"callbridge phonebook sync: {exc}", file=sys.stderr)
        return 2
    except CrmError as exc:
        print(f"callbridge phonebook sync: the CRM refused: {exc}", file=sys.stderr)
        return 1
