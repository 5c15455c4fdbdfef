"""Expand a manifest (plus its roles) into the concrete resources and handlers sent to the agent."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from provisioner import redaction
from provisioner.errors import Issue, ManifestError, ProvisionError, RoleError, TemplateError
from provisioner.lock.mirrors import NO_MIRRORS, Mirrors, mirror_spec
from provisioner.manifest.loader import LoadedManifest, shorten
from provisioner.manifest.model import HandlerSpec
from provisioner.manifest.origin import issue_at_feeding_field
from provisioner.manifest.source import PathKey, format_path
from provisioner.resources.specs import (
    DownloadSpec,
    EnvFileSpec,
    FileSpec,
    PipSpec,
    RequirementsSpec,
    ResourceSpec,
    SecretFromEnv,
    ServiceUnitSpec,
    VenvSpec,
    resource_id,
)
from provisioner.role_expansion import (
    Role,
    RoleRenderError,
    UnknownRoleError,
    expand_roles,
    ordered_roles,
    role_search_path,
)
from provisioner.templating import TemplateRenderer, package_templates_dir
from provisioner.values import check_env_value, inside_extra_root

# The unit needs the root as an absolute path, which only the host knows when the root is relative.
ROOT_PLACEHOLDER = "@PROVISION_ROOT@"

_resource_adapter: TypeAdapter[ResourceSpec] = TypeAdapter(ResourceSpec)

MASK = "***"


@dataclass
class HostResource:
    """One resource as the agent receives it."""

    id: str
    kind: str
    origin: str
    spec: dict[str, Any]
    digest: str
    notify: list[str]
    requires: list[str] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        payload = {"id": self.id, "kind": self.kind, "spec": self.spec, "digest": self.digest, "notify": self.notify}
        if self.requires:
            payload["requires"] = self.requires
        return payload


@dataclass
class Expansion:
    resources: list[HostResource] = field(default_factory=list)
    handlers: dict[str, HandlerSpec] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    #: What plan should say about the expansion, e.g. a token withheld from a mirror.
    notes: list[str] = field(default_factory=list)

    def secret_values_by_key(self) -> dict[str, str]:
        """Env-file secrets by key, so a rollback can restore them without storing them on the host."""
        values: dict[str, str] = {}
        for resource in self.resources:
            values.update(resource.spec.get("secret_values") or {})
        return values

    def payload(self) -> dict[str, Any]:
        return {
            "resources": [r.payload() for r in self.resources],
            "handlers": {name: h.model_dump(mode="json") for name, h in self.handlers.items()},
        }


def base_context(loaded: LoadedManifest, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Variables every role and template sees: the manifest's sections by name, plus `manifest`."""
    data = loaded.manifest.model_dump(mode="json", exclude={"resources", "handlers", "vars", "roles", "role_paths"})
    return {**data, "manifest": data, **(extra or {})}


def expand(loaded: LoadedManifest, environ: dict[str, str] | None = None,
           extra_context: dict[str, Any] | None = None, mirrors: Mirrors = NO_MIRRORS) -> Expansion:
    """Roles first (in order), then the manifest's own resources, which replace role ones with the same id.

    Every resource's URLs then go through `mirrors`, once, whichever role or section they came from.
    """
    manifest = loaded.manifest
    environ = dict(os.environ) if environ is None else environ
    context = base_context(loaded, extra_context)
    try:
        roles = ordered_roles(list(manifest.roles), role_search_path(loaded))
    except UnknownRoleError as exc:
        if exc.name not in manifest.roles:
            raise
        raise RoleInputError([loaded.source.issue(("roles", manifest.roles.index(exc.name)), str(exc))]) from None
    try:
        expanded = expand_roles(roles, manifest.vars, context)
    except RoleRenderError as exc:
        raise _at_roles_entry(loaded, exc) from None
    variables = {**expanded.defaults, **manifest.vars}
    template_context = {**context, **variables, "vars": variables}
    renderer = TemplateRenderer([loaded.directory / "templates", package_templates_dir()])

    specs: dict[str, _Declared] = {}
    for role_name, index, raw in expanded.resources:
        role = next(r for r in roles if r.name == role_name)
        spec = _validate_role_resource(loaded, raw, role, index)
        rid = resource_id(spec)
        if rid in specs:
            raise RoleError(f"{role.where(('resources', index))}: resource {rid} is declared by both role "
                            f"{specs[rid].origin.removeprefix('role ')!r} and role {role_name!r}")
        specs[rid] = _Declared(f"role {role_name}", spec, role, index)
    for index, spec in enumerate(manifest.resources):
        rid = resource_id(spec)
        first = specs.get(rid)
        if first is not None and first.role is None:
            line = loaded.source.locate(("resources", first.index))[1]
            raise ManifestError([loaded.source.issue(
                ("resources", index), f"resource {rid} is declared twice (first at resources[{first.index}], "
                f"line {line}); keep one, or give it another path or name")])
        specs[rid] = _Declared("manifest", spec, None, index)

    handlers = {**expanded.handlers, **manifest.handlers}
    out = Expansion(handlers=handlers)
    for rid, declared in specs.items():
        spec = declared.spec
        _refuse_outside_extra_roots(loaded, rid, declared)
        for handler in spec.notify:
            if handler not in handlers:
                raise declared.error(loaded, ("notify",), (
                    f"resource {rid} notifies unknown handler {handler!r}; "
                    f"define it under handlers: (known: {', '.join(sorted(handlers)) or 'none'})"), ProvisionError)
        if isinstance(spec, PipSpec | RequirementsSpec | VenvSpec) and spec.installer is None:
            spec = spec.model_copy(update={"installer": manifest.python.installer})
        mirrored = mirror_spec(rid, spec, mirrors)
        if mirrored.note:
            out.notes.append(mirrored.note)
        try:
            resource = _host_resource(rid, declared.origin, mirrored.spec, renderer, template_context, environ,
                                      out.secrets)
        except TemplateError as exc:
            raise declared.error(loaded, ("template",), str(exc), TemplateError) from None
        except _SecretError as exc:
            if exc.key in manifest.secrets and declared.role is not None:
                # A role's env file takes the manifest's `secrets:`; that is where the fix goes.
                raise ManifestError([loaded.source.issue(("secrets", exc.key), str(exc))]) from None
            raise declared.error(loaded, ("secrets", exc.key), str(exc), ProvisionError) from None
        out.resources.append(resource)
    _refuse_bad_requires(loaded, specs, out)
    return out


def _refuse_outside_extra_roots(loaded: LoadedManifest, rid: str, declared: _Declared) -> None:
    """An absolute path (only model files and folders may have one) must lie inside a target.extra_roots entry;
    an absolute venv must be the adopted one."""
    _refuse_foreign_venv(loaded, rid, declared)
    if getattr(declared.spec, "kind", None) == "venv":
        return
    path = getattr(declared.spec, "path", None)
    if not isinstance(path, str) or not path.startswith("/"):
        return
    extra_roots = loaded.manifest.target.extra_roots
    if inside_extra_root(path, extra_roots) is None:
        listed = ", ".join(extra_roots) or "none"
        raise declared.error(loaded, ("path",), (
            f"resource {rid}: {path} is outside the target root and outside every target.extra_roots entry "
            f"({listed}); add its folder to target.extra_roots (model files and folders only), or give a path "
            "under the root"), ProvisionError)


def _refuse_foreign_venv(loaded: LoadedManifest, rid: str, declared: _Declared) -> None:
    """A venv outside the root is only ever the one the manifest adopts (python.adopt)."""
    spec = declared.spec
    kind = getattr(spec, "kind", None)
    field = "path" if kind == "venv" else "venv"
    path = getattr(spec, field, None) if kind in ("venv", "pip", "requirements") else None
    if not isinstance(path, str) or not path.startswith("/"):
        return
    adopted = loaded.manifest.python.adopt
    if adopted is None or posixpath.normpath(path) != posixpath.normpath(adopted):
        raise declared.error(loaded, (field,), (
            f"resource {rid}: venv {path} is outside the target root and is not the adopted venv "
            f"(python.adopt: {adopted or 'unset'}); give a venv under the root, or adopt {path} with python.adopt"),
            ProvisionError)
    if kind == "venv" and not getattr(spec, "adopt", False):
        raise declared.error(loaded, ("adopt",), (
            f"resource {rid}: the adopted venv {path} is someone else's: declare it with adopt: true, so it is "
            "used as it is and never created, rebuilt or removed"), ProvisionError)


def _refuse_bad_requires(loaded: LoadedManifest, specs: dict[str, _Declared], out: Expansion) -> None:
    """`requires` naming no resource, or forming a cycle with what paths imply, is refused before any connection."""
    from provisioner.agent.graph import build
    from provisioner.agent.protocol import ResourceFailure

    for rid, declared in specs.items():
        for required in declared.spec.requires:
            if required not in specs:
                raise declared.error(loaded, ("requires",), (
                    f"resource {rid} requires {required!r}, which no resource is (ids are kind:key, e.g. "
                    f"git:ComfyUI; known: {', '.join(sorted(specs))})"), ProvisionError)
    try:
        build([r.payload() for r in out.resources])
    except ResourceFailure as exc:
        raise ProvisionError(f"{loaded.path}: {exc}") from None


def _at_roles_entry(loaded: LoadedManifest, exc: RoleRenderError) -> RoleError:
    """The error at the manifest's `roles:` entry that brought the failing role in (itself or as a dependency)."""
    search_path = role_search_path(loaded)
    for index, name in enumerate(loaded.manifest.roles):
        if exc.role in {role.name for role in ordered_roles([name], search_path)}:
            via = "" if name == exc.role else f" (role {name!r} depends on it)"
            return RoleInputError([loaded.source.issue(("roles", index), f"role {exc.role!r}{via}: {exc}")])
    return exc


def _validate_role_resource(loaded: LoadedManifest, raw: dict[str, Any], role: Role, index: int) -> Any:
    """The role's rendered resource as a spec; an invalid value is reported at the manifest field that fed it."""
    try:
        return _resource_adapter.validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        located: list[Issue] = []
        for error in errors:
            field = format_path(tuple(p for p in error["loc"] if not _is_branch_name(p)))
            message = str(error["msg"]).removeprefix("Value error, ")
            issue = issue_at_feeding_field(loaded, error.get("input"), message,
                                           f"role {role.name} as {field}, {role.where(('resources', index))}")
            if issue is not None and all(issue.field != seen.field for seen in located):
                located.append(issue)
        if located:
            raise RoleInputError(located) from None
        details = "; ".join(
            f"{format_path(tuple(p for p in err['loc'] if not _is_branch_name(p)))}: "
            f"{shorten(str(err['msg']).removeprefix('Value error, '), 300)}" for err in errors
        )
        raise RoleError(f"{role.where(('resources', index))}: a rendered resource is invalid: {details}") from None


def _is_branch_name(part: str | int) -> bool:
    """pydantic names union branches and validators in error locations: 'function-after[...]', 'PinnedPackage'."""
    return isinstance(part, str) and (part.startswith("function-") or part[:1].isupper())


def _host_resource(rid: str, origin: str, spec: Any, renderer: TemplateRenderer, context: dict[str, Any],
                   environ: dict[str, str], secrets: list[str]) -> HostResource:
    data = spec.model_dump(mode="json", exclude={"notify", "requires"})
    record = dict(data)
    # Which program installs is not part of what is installed: switching pip for uv changes nothing; nor
    # is the index a venv's uv comes from.
    record.pop("installer", None)
    if isinstance(spec, VenvSpec):
        record.pop("index_url", None)
    if isinstance(spec, FileSpec):
        if spec.template is not None:
            data["content"] = renderer.render(spec.template, {**context, **spec.vars})
        data.pop("template")
        data.pop("vars")
        record = {k: v for k, v in data.items() if k != "content"}
        record["sha256"] = hashlib.sha256(data["content"].encode("utf-8")).hexdigest()
    if isinstance(spec, ServiceUnitSpec):
        data["unit"] = renderer.render("systemd/service.j2", {**context, "service_unit": data,
                                                             "root": ROOT_PLACEHOLDER})
    if isinstance(spec, DownloadSpec) and spec.auth is not None:
        token = _read_secret(rid, "auth", spec.auth, environ)
        data["auth"] = None
        if token:
            data["token"] = token
            secrets.append(token)
        record["auth"] = MASK
    if isinstance(spec, EnvFileSpec):
        data["secret_values"] = _read_secrets(rid, spec, environ)
        # Optional secrets this controller does not have: the host keeps its values for these keys.
        data["unset_secrets"] = sorted(set(spec.secrets) - set(data["secret_values"]))
        secrets.extend(v for v in data["secret_values"].values() if v)
        data.pop("secrets")
        record["secrets"] = {key: MASK for key in data["secret_values"]}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()
    return HostResource(rid, data["kind"], origin, data, digest, list(spec.notify), list(spec.requires))


class RoleInputError(ManifestError, RoleError):
    """A manifest value that a role cannot use (an unknown role, a var of the wrong shape), located in the manifest."""


class TemplateInputError(ManifestError, TemplateError):
    """A manifest resource's template that cannot be rendered, located in the manifest."""


@dataclass
class _Declared:
    """A resource and where it was written: the manifest's resources[index], or a role's."""

    origin: str
    spec: Any
    role: Role | None
    index: int

    def error(self, loaded: LoadedManifest, field: PathKey, message: str,
              kind: type[ProvisionError] = RoleError) -> ProvisionError:
        """`kind` located where the resource was written: in the manifest, as a ManifestError too."""
        if self.role is None:
            located = {RoleError: RoleInputError, TemplateError: TemplateInputError}.get(kind, ManifestError)
            return located([loaded.source.issue(("resources", self.index, *field), message)])
        return kind(f"{self.role.where(('resources', self.index, *field))}: {message}")


class _SecretError(ProvisionError):
    """A secret cannot be read from the controller's environment."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


def _read_secrets(rid: str, spec: EnvFileSpec, environ: dict[str, str]) -> dict[str, str]:
    values = {key: _read_secret(rid, key, source, environ) for key, source in spec.secrets.items()}
    return {key: value for key, value in values.items() if value is not None}


def _read_secret(rid: str, key: str, source: SecretFromEnv, environ: dict[str, str]) -> str | None:
    value = environ.get(source.from_env)
    if value is not None:
        redaction.remember(value)
    if value is None and not source.optional:
        raise _SecretError(
            key,
            f"{rid}: secret {key} reads ${source.from_env}, which is not set on the controller; "
            f"export it (it is sent to the host on stdin, never in argv or logs) or mark it optional: true"
        )
    if value is not None:
        try:
            check_env_value(value)
        except ValueError:
            # The value is a secret: the message says what is wrong with it, never what it is.
            raise _SecretError(
                key,
                f"{rid}: secret {key} read from ${source.from_env} has a line break, a control character or a "
                "trailing backslash, which would add lines to the env file or the request; export it without"
            ) from None
    return value

