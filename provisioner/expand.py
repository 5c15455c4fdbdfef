"""Expand a manifest (plus its roles) into the concrete resources and handlers sent to the agent."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from provisioner.errors import ProvisionError, RoleError
from provisioner.lock.mirrors import NO_MIRRORS, Mirrors, mirror_spec
from provisioner.manifest.loader import LoadedManifest
from provisioner.manifest.model import HandlerSpec
from provisioner.resources.specs import (
    DownloadSpec,
    EnvFileSpec,
    FileSpec,
    ResourceSpec,
    SecretFromEnv,
    ServiceUnitSpec,
    resource_id,
)
from provisioner.role_expansion import expand_roles, ordered_roles, role_search_path
from provisioner.templating import TemplateRenderer, package_templates_dir
from provisioner.values import check_env_value

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

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "spec": self.spec, "digest": self.digest, "notify": self.notify}


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
    roles = ordered_roles(list(manifest.roles), role_search_path(loaded))
    expanded = expand_roles(roles, manifest.vars, context)
    variables = {**expanded.defaults, **manifest.vars}
    template_context = {**context, **variables, "vars": variables}
    renderer = TemplateRenderer([loaded.directory / "templates", package_templates_dir()])

    specs: dict[str, tuple[str, Any]] = {}
    for role_name, raw in expanded.resources:
        spec = _validate_role_resource(raw, role_name, roles)
        rid = resource_id(spec)
        if rid in specs:
            raise RoleError(f"resource {rid} is declared by both role {specs[rid][0]!r} and role {role_name!r}")
        specs[rid] = (f"role {role_name}", spec)
    for spec in manifest.resources:
        specs[resource_id(spec)] = ("manifest", spec)

    handlers = {**expanded.handlers, **manifest.handlers}
    out = Expansion(handlers=handlers)
    for rid, (origin, spec) in specs.items():
        for handler in spec.notify:
            if handler not in handlers:
                raise ProvisionError(
                    f"{loaded.path}: resource {rid} notifies unknown handler {handler!r}; "
                    f"define it under handlers: (known: {', '.join(sorted(handlers)) or 'none'})"
                )
        mirrored = mirror_spec(rid, spec, mirrors)
        if mirrored.note:
            out.notes.append(mirrored.note)
        out.resources.append(_host_resource(rid, origin, mirrored.spec, renderer, template_context, environ,
                                            out.secrets))
    return out


def _validate_role_resource(raw: dict[str, Any], role_name: str, roles: list[Any]) -> Any:
    try:
        return _resource_adapter.validate_python(raw)
    except ValidationError as exc:
        path = next(r.path for r in roles if r.name == role_name)
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise RoleError(f"{path}: a rendered resource is invalid: {details}") from None


def _host_resource(rid: str, origin: str, spec: Any, renderer: TemplateRenderer, context: dict[str, Any],
                   environ: dict[str, str], secrets: list[str]) -> HostResource:
    data = spec.model_dump(mode="json", exclude={"notify"})
    record = dict(data)
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
        secrets.extend(v for v in data["secret_values"].values() if v)
        data.pop("secrets")
        record["secrets"] = {key: MASK for key in data["secret_values"]}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()
    return HostResource(rid, data["kind"], origin, data, digest, list(spec.notify))


def _read_secrets(rid: str, spec: EnvFileSpec, environ: dict[str, str]) -> dict[str, str]:
    values = {key: _read_secret(rid, key, source, environ) for key, source in spec.secrets.items()}
    return {key: value for key, value in values.items() if value is not None}


def _read_secret(rid: str, key: str, source: SecretFromEnv, environ: dict[str, str]) -> str | None:
    value = environ.get(source.from_env)
    if value is None and not source.optional:
        raise ProvisionError(
            f"{rid}: secret {key} reads ${source.from_env}, which is not set on the controller; "
            f"export it (it is sent to the host on stdin, never in argv or logs) or mark it optional: true"
        )
    if value is not None:
        try:
            check_env_value(value)
        except ValueError:
            # The value is a secret: the message says what is wrong with it, never what it is.
            raise ProvisionError(
                f"{rid}: secret {key} read from ${source.from_env} has a line break, a control character or a "
                "trailing backslash, which would add lines to the env file or the request; export it without"
            ) from None
    return value

