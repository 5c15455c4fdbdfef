"""sha256 of large files remembered by (size, mtime, inode), so a no-op check need not re-read them."""

from __future__ import annotations

import json
import os
import threading

from .fsutil import atomic_write
from .protocol import Context

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, Optional

FILE = "statcache.json"
#: Steps run in parallel threads (schedule.py): each records under this lock, over what the others wrote.
_record_lock = threading.Lock()


class StatCache:
    def __init__(self, ctx: Context) -> None:
        self.path = ctx.state_path(FILE)
        self.entries: Dict[str, Dict[str, Any]] = self._load()

    def _load(self) -> Dict[str, Dict[str, Any]]:
        from .statedir import read_text

        try:
            data = json.loads(read_text(self.path) or "{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _stamp(st: os.stat_result) -> Dict[str, int]:
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}

    def lookup(self, path: str, st: os.stat_result) -> Optional[str]:
        entry = self.entries.get(path)
        if entry and all(entry.get(k) == v for k, v in self._stamp(st).items()):
            return entry.get("sha256")
        return None

    def record(self, path: str, st: os.stat_result, sha256: str) -> None:
        with _record_lock:
            self.entries = self._load()
            self.entries[path] = dict(self._stamp(st), sha256=sha256)
            atomic_write(self.path, json.dumps(self.entries, sort_keys=True).encode("utf-8"), 0o600)
