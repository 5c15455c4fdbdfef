"""Saved plans on the host: fingerprints of what a probe observed, and the check an apply of a saved plan
makes under the root lock before it changes anything.

Observed state can hold host values (an env file's contents), so it never leaves the host: a probe sends
back only its sha256. `apply PLANFILE` sends the fingerprints the plan was made from; when the host's
probe now differs for any resource, the host moved and the apply refuses, naming what moved.
"""

from __future__ import annotations

import hashlib
import json

from .protocol import ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Sequence


def observed_digest(observed: Any, not_state: Sequence[str] = ()) -> str:
    """sha256 of the canonical JSON of one resource's observed state, without the kind's `not_state` fields."""
    if isinstance(observed, dict) and not_state:
        observed = {k: v for k, v in observed.items() if k not in not_state}
    text = json.dumps(observed, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(row: Dict[str, Any]) -> Dict[str, Any]:
    """What a saved plan records of one probe row: its status, its changes and its observed digest."""
    return {"status": row["status"], "changes": row.get("changes") or [],
            "observed_digest": row.get("observed_digest")}


def refuse_if_moved(expected: Dict[str, Dict[str, Any]], probed: List[Dict[str, Any]],
                    owed: List[Dict[str, Any]]) -> None:
    """Raise ResourceFailure naming every resource whose probe differs from the saved plan's."""
    moved: List[str] = []
    now = {row["id"]: row for row in probed + owed}
    for rid in sorted(set(expected) | set(now)):
        if rid not in now:
            moved.append("%s: in the plan, not in this apply" % rid)
            continue
        if rid not in expected:
            moved.append("%s: %s now, not in the plan" % (rid, now[rid]["status"]))
            continue
        want, got = expected[rid], fingerprint(now[rid])
        if want.get("status") != got["status"]:
            moved.append("%s: planned as %s, now %s" % (rid, want.get("status"), got["status"]))
        elif want.get("observed_digest") != got["observed_digest"]:
            moved.append("%s: its state on the host changed since the plan" % rid)
        elif want.get("changes") != got["changes"]:
            moved.append("%s: the changes it needs are not those planned" % rid)
    if moved:
        raise ResourceFailure("the host moved since the plan was saved; nothing was changed. Make a new plan "
                              "(provision plan -o PLANFILE) and review it:\n  " + "\n  ".join(moved))
