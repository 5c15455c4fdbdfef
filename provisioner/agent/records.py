"""What a generation records of each resource and handler, and the digests that make a rollback trustworthy.

A generation file on the host says what a rollback re-applies, including `command` resources and handler
argv: anyone who can write the file could make a rollback run anything. So the controller keeps, in its
ledger, the digest of every record it sent for each generation (it computes them with these same
functions), and a rollback re-applies a generation only when every record in it has one of those digests.
"""

from __future__ import annotations

import hashlib
import json

from .protocol import ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List


def recordable(resource: Dict[str, Any]) -> Dict[str, Any]:
    """The resource as it can be stored and re-applied later: secret values removed, key names kept, and no
    staged file (it belongs to one apply)."""
    spec = dict(resource["spec"])
    if "secret_values" in spec:
        spec["secret_values"] = {key: None for key in spec["secret_values"]}
    spec.pop("token", None)
    spec.pop("staged", None)
    return {"id": resource["id"], "kind": resource["kind"], "digest": resource["digest"],
            "notify": resource.get("notify") or [], "spec": spec}


def digest(record: Any) -> str:
    """sha256 of the canonical JSON of `record` (sorted keys, no whitespace, ASCII)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def handler_digest(name: str, spec: Any) -> str:
    return digest({"handler": name, "spec": spec})


def generation_digests(records: List[Dict[str, Any]], handlers: Dict[str, Any]) -> Dict[str, List[str]]:
    """The digests of a generation's resource records and handlers, as the controller keeps them."""
    return {"resources": sorted(digest(r) for r in records),
            "handlers": sorted(handler_digest(name, spec) for name, spec in handlers.items())}


def refuse_untrusted(number: int, record: Dict[str, Any], trusted: Dict[str, Any], path: str) -> None:
    """Raise unless every resource record and handler in generation `number` has a digest the controller
    recorded for it; nothing is applied or run otherwise."""
    known = trusted.get(str(number))
    if not isinstance(known, dict):
        raise ResourceFailure(
            "generation %d was not recorded by this controller (its ledger has generations %s for this root): "
            "a rollback re-applies only what the controller that wrote a generation sent. Roll back from that "
            "controller (or point --ledger at its ledger), or apply the manifest you want to return to"
            % (number, ", ".join(sorted(trusted, key=int)) or "none"))
    resources = set(known.get("resources") or [])
    handlers = set(known.get("handlers") or [])
    bad = ["resource %s" % r.get("id", "?") for r in record.get("resources") or []
           if not isinstance(r, dict) or digest(r) not in resources]
    bad += ["handler %s" % name for name, spec in sorted((record.get("handlers_desired") or {}).items())
            if handler_digest(name, spec) not in handlers]
    if bad:
        raise ResourceFailure(
            "generation %d in %s was changed after the controller wrote it: %s %s not what the controller "
            "sent (digests differ). Nothing was rolled back or run. Inspect the file (who can write it?), "
            "or apply the manifest you want to return to" % (number, path, ", ".join(bad),
                                                             "is" if len(bad) == 1 else "are"))
