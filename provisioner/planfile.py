"""Saved plans: `plan -o PLANFILE` writes one, `apply PLANFILE` applies exactly it or refuses.

The file is JSON (format_version 1, see README "Saved plans"). It carries no secrets: secrets are read
from the environment again at apply time, and the plan keeps only an HMAC of them. It is signed with
HMAC-SHA256 under a key of this controller (`$PROVISION_PLAN_KEY_FILE`, else `plan.key` beside the
default ledger), so an edited plan, or one made with another controller's key, is refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provisioner import __version__
from provisioner.engine import HostSession, PlanReport, RunOptions
from provisioner.errors import ProvisionError
from provisioner.lock.mirrors import find_mirrors_file
from provisioner.manifest import LoadedManifest, load_manifest
from provisioner.plan_inputs import changed_facts, changed_inputs, input_files, stable_facts

FORMAT_VERSION = 1
KIND = "provision-plan"
KEY_ENV = "PROVISION_PLAN_KEY_FILE"


class PlanFileError(ProvisionError):
    """A plan file that cannot be applied: unreadable, edited, or made for a host or inputs that moved."""


class PlannedResource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    status: str
    changes: list[dict[str, Any]] = Field(default_factory=list)
    #: sha256 of what the probe observed on the host (the observed state itself stays on the host).
    observed_digest: str | None = None


class SavedPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = 1
    kind: Literal["provision-plan"] = "provision-plan"
    provision: str
    created: str
    manifest: str
    manifest_name: str
    host: str
    root: str
    deep: bool
    #: Planned with --prune: the large data it plans to remove is part of the plan.
    prune: bool = False
    #: sha256 of every input file expansion may read, by absolute path ('' for an expected, absent file).
    inputs: dict[str, str]
    #: The host facts the resolution read (None for manifests without a stack to resolve).
    facts: dict[str, Any] | None
    #: sha256 of the resources and handlers as the agent receives them (digests, never secret values).
    payload_digest: str
    #: HMAC (under the plan key) of the secret values the expansion read from the environment.
    secrets_hmac: str
    resources: list[PlannedResource]
    summary: dict[str, int]
    signature: str = ""

    @property
    def pending(self) -> list[PlannedResource]:
        return [r for r in self.resources if r.status != "ok"]


def key_path() -> Path:
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    from provisioner.ledger import default_ledger_path

    return default_ledger_path().parent / "plan.key"


def _key(create: bool) -> bytes:
    path = key_path()
    if not path.is_file():
        if not create:
            raise PlanFileError(f"no plan key at {path}: this plan was signed on another controller; copy its "
                                f"key there (or set ${KEY_ENV}), or make the plan here")
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    if path.stat().st_mode & 0o077:
        raise PlanFileError(f"{path}: the plan key is readable by others; chmod 600 {path}")
    return path.read_bytes()


def _canonical(document: dict[str, Any]) -> bytes:
    body = {k: v for k, v in document.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _sign(document: dict[str, Any], key: bytes) -> str:
    return "hmac-sha256:" + hmac.new(key, _canonical(document), hashlib.sha256).hexdigest()


def payload_digest(session: HostSession) -> str:
    payload = session.expansion.payload()
    resources = [{k: r[k] for k in ("id", "kind", "digest", "notify")} for r in payload["resources"]]
    text = json.dumps({"resources": resources, "handlers": payload["handlers"]}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _secrets_hmac(session: HostSession, key: bytes) -> str:
    values = json.dumps(sorted(session.secrets), separators=(",", ":")).encode("utf-8")
    return hmac.new(key, b"secrets\0" + values, hashlib.sha256).hexdigest()


def _facts(session: HostSession) -> dict[str, Any] | None:
    return stable_facts(session.facts.model_dump(mode="json")) if session.facts is not None else None


def save_plan(path: Path, session: HostSession, report: PlanReport) -> SavedPlan:
    """Write the plan `report` (made by `session`) to `path`, signed."""
    if report.errors:
        raise PlanFileError(f"{path}: not saved: the plan has errors ({', '.join(r['id'] for r in report.errors)})")
    key = _key(create=True)
    plan = SavedPlan(
        provision=__version__, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        manifest=str(session.loaded.path.resolve()), manifest_name=report.manifest, host=report.host,
        root=session.loaded.manifest.target.root, deep=session.options.deep, prune=session.options.prune,
        inputs=input_files(session.loaded, session.mirrors_path), facts=_facts(session),
        payload_digest=payload_digest(session), secrets_hmac=_secrets_hmac(session, key),
        resources=[PlannedResource(id=r["id"], status=r["status"], changes=r.get("changes") or [],
                                   observed_digest=r.get("observed_digest")) for r in report.resources],
        summary=report.as_json()["summary"],
    )
    document = plan.model_dump(mode="json")
    document["signature"] = _sign(document, key)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)
    return plan


def is_plan_file(path: Path) -> bool:
    """True for a file that starts like a saved plan (a manifest is YAML, never this JSON object)."""
    try:
        with path.open("rb") as handle:
            if not handle.read(64).lstrip().startswith(b"{"):
                return False
            data = path.read_bytes()
    except OSError:
        return False
    try:
        document = json.loads(data)
    except ValueError:
        return b'"provision-plan"' in data  # a plan broken by an edit: read_plan says so
    return isinstance(document, dict) and document.get("kind") == KIND


def read_plan(path: Path) -> SavedPlan:
    """The saved plan at `path`, its signature checked; PlanFileError otherwise."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanFileError(f"{path}: not a readable plan file: {exc}") from None
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise PlanFileError(f"{path}: not a plan file made by `provision plan -o`")
    if document.get("format_version") != FORMAT_VERSION:
        raise PlanFileError(f"{path}: plan format_version {document.get('format_version')!r}; this provision "
                            f"reads {FORMAT_VERSION}: make the plan again with this version")
    expected = _sign(document, _key(create=False))
    if not hmac.compare_digest(str(document.get("signature", "")), expected):
        raise PlanFileError(f"{path}: the plan file was edited after it was saved (its signature does not "
                            "match); make a new plan")
    try:
        plan = SavedPlan.model_validate(document)
    except ValidationError as exc:
        raise PlanFileError(f"{path}: not a valid plan file: {exc.errors()[0]['msg']}") from None
    if plan.provision != __version__:
        raise PlanFileError(f"{path}: made by provision {plan.provision}, this is {__version__}; make a new plan")
    return plan


def refuse_changed_inputs(plan: SavedPlan, loaded: LoadedManifest, mirrors_path: Path | None, path: Path) -> None:
    """Before connecting: the manifest, roles, templates, catalog, lock and mirrors must be as planned."""
    lines = changed_inputs(plan.inputs, input_files(loaded, mirrors_path))
    if lines:
        raise PlanFileError(f"{path}: the inputs of the plan changed since it was saved; nothing was changed. "
                            "Make a new plan:\n  " + "\n  ".join(lines))


class PlanGuard:
    """What `apply PLANFILE` checks once the host's facts are in, and the fingerprints the agent checks."""

    def __init__(self, plan: SavedPlan, path: Path) -> None:
        self.plan = plan
        self.path = path

    def expect(self, session: HostSession, host: str) -> dict[str, Any]:
        """Refuse when the host, the expansion or the secrets moved; else what the agent must find."""
        if host != self.plan.host:
            raise PlanFileError(f"{self.path}: planned for {self.plan.host}, but the manifest now targets {host}")
        facts = _facts(session)
        if facts != self.plan.facts:
            moved = changed_facts(self.plan.facts or {}, facts or {})
            raise PlanFileError(f"{host}: the host's facts changed since the plan was saved; nothing was changed. "
                                "Make a new plan:\n  " + "\n  ".join(moved or ["facts differ"]))
        if payload_digest(session) != self.plan.payload_digest:
            raise PlanFileError(f"{self.path}: the manifest expands to other resources than the plan's (an "
                                "environment variable it reads changed?); nothing was changed. Make a new plan")
        if _secrets_hmac(session, _key(create=False)) != self.plan.secrets_hmac:
            raise PlanFileError(f"{self.path}: a secret read from the environment differs from the one the plan "
                                "was made with; nothing was changed. Export the same value, or make a new plan")
        return {r.id: r.model_dump(mode="json", exclude={"id"}) for r in self.plan.resources}


def open_saved_plan(path: Path, options: RunOptions) -> tuple[LoadedManifest, RunOptions, PlanGuard]:
    """The manifest a verified plan was made from, the options to apply it with, and its guard."""
    plan = read_plan(path)
    manifest = Path(plan.manifest)
    if not manifest.is_file():
        raise PlanFileError(f"{path}: the plan's manifest {manifest} is gone; nothing was changed")
    loaded = load_manifest(manifest)
    # Probe as the plan did: a plan made with --deep compares re-hashed states.
    options = dataclasses.replace(options, deep=plan.deep, prune=plan.prune)
    refuse_changed_inputs(plan, loaded, find_mirrors_file(loaded.path), path)
    return loaded, options, PlanGuard(plan, path)
