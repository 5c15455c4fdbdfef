"""Which records this controller sent for each generation it wrote, so a rollback re-applies only those.

Kept in the ledger's SQLite file, in a table of its own: per host, target root (as the agent resolved it)
and generation, the digests of the resource records and handlers of that apply (provisioner.agent.records
computes them, on both sides). The agent refuses a rollback to a generation whose file holds anything else.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from provisioner.agent.records import generation_digests, recordable
from provisioner.errors import ProvisionError

SCHEMA = """
CREATE TABLE IF NOT EXISTS generation_digests (
    host TEXT NOT NULL,
    root TEXT NOT NULL,
    generation INTEGER NOT NULL,
    recorded REAL NOT NULL,
    digests TEXT NOT NULL,
    PRIMARY KEY (host, root, generation)
);
"""

#: Per root, per generation (as a string: JSON keys), {"resources": [...], "handlers": [...]}.
Trusted = dict[str, dict[str, dict[str, list[str]]]]


def sent_digests(request: dict[str, Any]) -> dict[str, list[str]]:
    """The digests of what an apply request asks the agent to record."""
    return generation_digests([recordable(r) for r in request["resources"]], request.get("handlers") or {})


def replayed_digests(reported: Any, trusted: dict[str, list[str]]) -> dict[str, list[str]]:
    """What a rollback recorded, as the agent reports it, kept only where this controller trusted it already."""
    reported = reported if isinstance(reported, dict) else {}
    return {part: sorted(set(reported.get(part) or []) & set(trusted.get(part) or []))
            for part in ("resources", "handlers")}


class TrustedGenerations:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ProvisionError(f"cannot open the ledger {path}: {exc}; set --ledger or PROVISION_LEDGER") from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def record(self, host: str, root: str, generation: int, digests: dict[str, list[str]]) -> None:
        db = self._connect()
        try:
            with db:
                db.execute("INSERT OR REPLACE INTO generation_digests (host, root, generation, recorded, digests)"
                           " VALUES (?, ?, ?, ?, ?)",
                           (host, root, generation, time.time(), json.dumps(digests, sort_keys=True)))
        except sqlite3.Error as exc:
            raise ProvisionError(f"cannot record generation {generation} of {host} in the ledger {self.path}: "
                                 f"{exc}; a rollback to it will be refused") from None
        finally:
            db.close()

    def for_host(self, host: str) -> Trusted:
        db = self._connect()
        try:
            rows = db.execute("SELECT root, generation, digests FROM generation_digests WHERE host = ?",
                              (host,)).fetchall()
        except sqlite3.Error as exc:
            raise ProvisionError(f"cannot read the ledger {self.path}: {exc}") from None
        finally:
            db.close()
        trusted: Trusted = {}
        for root, generation, digests in rows:
            trusted.setdefault(root, {})[str(generation)] = json.loads(digests)
        return trusted


def ledger_path(path: Path | None) -> Path:
    from provisioner.ledger import default_ledger_path

    return path or default_ledger_path()


def carried_digests(result: dict[str, Any], trusted: Trusted) -> list[str]:
    """The records a generation carries as retired (left on the host), kept where this controller trusted
    them already in an earlier generation of the same root."""
    known = {d for generation in trusted.get(result["root"], {}).values() for d in generation.get("resources") or []}
    return sorted(set(result.get("retired") or []) & known)


def remember_apply(path: Path | None, host: str, request: dict[str, Any], result: dict[str, Any]) -> None:
    """After an apply that wrote a generation: keep the digests of what this controller sent for it."""
    if result.get("generation"):
        digests = sent_digests(request)
        digests["resources"] = sorted(set(digests["resources"]) | set(carried_digests(result, request["trusted"])))
        TrustedGenerations(ledger_path(path)).record(host, result["root"], result["generation"], digests)


def trusted_for_plan(path: Path | None, host: str) -> Trusted:
    """What this controller recorded for `host` (maybe nothing): what plan and apply may remove. A ledger
    that cannot be read vouches for nothing: plan still works, and removes nothing it cannot verify."""
    try:
        return TrustedGenerations(ledger_path(path)).for_host(host)
    except ProvisionError:
        return {}


def trusted_for_rollback(path: Path | None, host: str, root: str) -> Trusted:
    """Everything this controller recorded for `host`; refused when that is nothing."""
    store = TrustedGenerations(ledger_path(path))
    trusted = store.for_host(host)
    if not trusted:
        raise ProvisionError(
            f"{host}: the ledger {store.path} has no record of the generations written on {root}, so nothing "
            "on the host can be trusted to re-apply (a generation file may have been edited there). Roll back "
            "from the controller that applied them (or point --ledger / PROVISION_LEDGER at its ledger), or "
            "apply the manifest you want to return to")
    return trusted


def remember_rollback(path: Path | None, host: str, trusted: Trusted, result: dict[str, Any]) -> None:
    """A rollback's new generation re-applies records already trusted: keep those (and only those)."""
    if result.get("generation"):
        target = trusted.get(result["root"], {}).get(str(result.get("rollback_to")), {})
        digests = replayed_digests(result.get("recorded"), target)
        digests["resources"] = sorted(set(digests["resources"]) | set(carried_digests(result, trusted)))
        TrustedGenerations(ledger_path(path)).record(host, result["root"], result["generation"], digests)
