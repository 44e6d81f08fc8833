"""The live rule set, reloaded when the files change: atomically, and only when valid.

A broken edit never loads half a rule set: the last good set stays live and the errors are
kept for GET /v1/admin/rules and logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from service.engine.index import RuleIndex
from service.engine.loader import RulesInvalid, load_rules
from service.kit.db import utcnow

log = logging.getLogger(__name__)


class RulesUnavailable(Exception):
    """No valid rule set has loaded yet; events wait (unprocessed) until one does."""


@dataclass
class RulesStatus:
    directory: str
    version: str | None = None
    loaded_at: dt.datetime | None = None
    rules: int = 0
    errors: list[str] = field(default_factory=list)
    checked_at: dt.datetime | None = None


SETTLE_SECONDS = 1.0


Snapshot = dict[str, tuple[int, int]]  # file -> (mtime_ns, size)


def _snapshot(directory: Path) -> Snapshot:
    return {
        str(path): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _still_being_written(before: Snapshot | None, now: Snapshot) -> bool:
    """Whether a changed file was written less than SETTLE_SECONDS ago."""
    changed = [
        mtime
        for name, (mtime, size) in now.items()
        if before is None or before.get(name) != (mtime, size)
    ]
    return bool(changed) and time.time() - max(changed) / 1e9 < SETTLE_SECONDS


class RuleRegistry:
    def __init__(self, directory: Path, check_every: float = 2.0):
        self.directory = directory
        self.check_every = check_every
        self.status = RulesStatus(str(directory))
        self._index: RuleIndex | None = None
        self._snapshot: Snapshot | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def current(self) -> RuleIndex | None:
        """The live index (None when there is no rules folder); raises RulesUnavailable when
        the folder exists but no valid set has loaded yet."""
        # Until a set has loaded, every caller takes the lock, so a thread that arrives while
        # another is loading waits for it instead of running without rules.
        if self._index is None or time.monotonic() - self._checked >= self.check_every:
            self.reload_if_changed()
        if self._index is None and self.status.errors:
            raise RulesUnavailable(f"no valid rule set loaded from {self.directory}")
        return self._index

    def reload_if_changed(self) -> None:
        with self._lock:
            self._checked = time.monotonic()
            self.status.checked_at = utcnow()
            if not self.directory.is_dir():
                if self._snapshot != {}:
                    log.warning(
                        "no rules folder at %s: events are processed without rules", self.directory
                    )
                self._snapshot = {}
                return
            snapshot = _snapshot(self.directory)
            if snapshot == self._snapshot:
                return
            if self._index is not None and _still_being_written(self._snapshot, snapshot):
                return  # an editor may be half-way through saving: look again next time
            self._snapshot = snapshot
            try:
                ruleset = load_rules(self.directory)
            except RulesInvalid as exc:
                self.status.errors = [str(e) for e in exc.errors]
                log.error(
                    "rules in %s not loaded (%d errors); %s stays live:\n%s",
                    self.directory,
                    len(exc.errors),
                    f"version {self.status.version}" if self._index else "no rule set",
                    "\n".join(self.status.errors),
                )
                return
            self._index = RuleIndex.from_ruleset(ruleset)
            self.status = RulesStatus(
                str(self.directory), ruleset.version, utcnow(), len(self._index.rules), [], utcnow()
            )
            log.info(
                "rules version %s live: %d rules", ruleset.version[:12], len(self._index.rules)
            )
