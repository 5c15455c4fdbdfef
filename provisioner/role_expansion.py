"""Roles: reusable resource lists in YAML, rendered with jinja2 from the manifest and its vars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict, Field

from provisioner.errors import ManifestError, RoleError
from provisioner.manifest.loader import LoadedManifest, validate_model
from provisioner.manifest.model import HandlerSpec
from provisioner.manifest.source import PathKey, SourceMap, format_path, load_yaml_file
from provisioner.templating import render_value
from provisioner.values import Name


class RoleFile(BaseModel):
    """The shape of roles/<name>.yaml before its values are rendered."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    depends: list[Name] = Field(default_factory=list, description="Roles expanded before this one.")
    defaults: dict[str, Any] = Field(default_factory=dict, description="Variables the manifest's vars override.")
    resources: list[dict[str, Any]] = Field(default_factory=list)
    handlers: dict[Name, dict[str, Any]] = Field(default_factory=dict)


@dataclass
class Role:
    name: str
    path: Path
    body: RoleFile
    source: SourceMap | None = None

    def where(self, path: PathKey) -> str:
        """`role.yaml:14: resources[2]`, for errors in what this role declares."""
        line = self.source.locate(path)[1] if self.source else None
        return f"{self.path}{f':{line}' if line else ''}: {format_path(path)}"


class RoleRenderError(RoleError):
    """A role's values cannot be rendered from the manifest's; `role` names the role."""

    def __init__(self, role: str, message: str) -> None:
        self.role = role
        super().__init__(message)


@contextmanager
def _rendering(role: Role) -> Iterator[None]:
    try:
        yield
    except RoleError as exc:
        raise RoleRenderError(role.name, str(exc)) from None


class UnknownRoleError(RoleError):
    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


@dataclass
class ExpandedRoles:
    """Resources and handlers contributed by roles, each tagged with the role it came from."""

    #: (role name, index in the role's resources, rendered resource)
    resources: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    handlers: dict[str, HandlerSpec] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)


def builtin_roles_dir() -> Path:
    return Path(str(resources.files("provisioner.roles")))


def role_search_path(loaded: LoadedManifest, extra: list[Path] | None = None) -> list[Path]:
    paths = [loaded.directory / p for p in loaded.manifest.role_paths]
    return [*paths, *(extra or []), builtin_roles_dir()]


def find_role(name: str, search_path: list[Path]) -> Role:
    for directory in search_path:
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            loaded = load_yaml_file(candidate)
            body = validate_model(RoleFile, loaded.data or {}, loaded.source)
            return Role(name, candidate, body, loaded.source)
    available = sorted({p.stem for d in search_path if d.is_dir() for p in d.glob("*.yaml")})
    raise UnknownRoleError(
        name,
        f"unknown role {name!r}; looked in {', '.join(str(d) for d in search_path)}. "
        f"Available roles: {', '.join(available) or 'none'}"
    )


def ordered_roles(names: list[str], search_path: list[Path]) -> list[Role]:
    """Roles with their dependencies first, each once; a dependency cycle is an error."""
    ordered: list[Role] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise RoleError(f"role dependency cycle: {' -> '.join((*chain, name))}")
        if name in seen:
            return
        role = find_role(name, search_path)
        for dependency in role.body.depends:
            visit(dependency, (*chain, name))
        seen.add(name)
        ordered.append(role)

    for name in names:
        visit(name, ())
    return ordered


def _render(value: Any, context: dict[str, Any], where: str) -> Any:
    try:
        return render_value(value, context)
    except jinja2.UndefinedError as exc:
        raise RoleError(f"{where}: {exc.message}; set it under vars:") from None
    except jinja2.TemplateError as exc:
        raise RoleError(f"{where}: template error: {exc}") from None
    except (TypeError, ValueError, AttributeError, LookupError, ArithmeticError) as exc:
        # A manifest value of the wrong shape, e.g. `python_packages: 5` under `| length`.
        raise RoleError(f"{where}: cannot render it from the manifest's values: {exc}; "
                        "check the type of the vars it uses") from None


def _loop_contexts(raw: dict[str, Any], context: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """`loop:` (as in Ansible) repeats a resource once per item, with `item` bound to it;
    `when:` (rendered per item) skips it when false."""
    if "loop" not in raw:
        return [context]
    items = _render(raw["loop"], context, where)
    if not isinstance(items, list):
        raise RoleError(f"{where}: loop must render to a list, got {type(items).__name__}")
    return [{**context, "item": item} for item in items]


def expand_roles(roles: list[Role], manifest_vars: dict[str, Any], base_context: dict[str, Any]) -> ExpandedRoles:
    """Render each role's resources and handlers; role defaults sit under the manifest's vars."""
    out = ExpandedRoles()
    for role in roles:
        # Defaults may themselves be templates over the manifest (e.g. "{{ stack.models_dir }}").
        with _rendering(role):
            out.defaults.update(_render(role.body.defaults, base_context, role.where(("defaults",))))
    variables = {**out.defaults, **manifest_vars}
    context = {**base_context, **variables, "vars": variables}
    for role in roles:
        with _rendering(role):
            for index, raw in enumerate(role.body.resources):
                where = role.where(("resources", index))
                for item_context in _loop_contexts(raw, context, where):
                    if "when" in raw and not _render(raw["when"], item_context, where):
                        continue
                    body = {key: value for key, value in raw.items() if key not in ("loop", "when")}
                    out.resources.append((role.name, index, _render(body, item_context, where)))
            for name, raw_handler in role.body.handlers.items():
                try:
                    rendered_handler = render_value(raw_handler, context)
                except (jinja2.TemplateError, TypeError, ValueError, AttributeError, LookupError,
                        ArithmeticError) as exc:
                    raise RoleError(f"{role.path}: handlers.{name}: template error: {exc}") from None
                try:
                    out.handlers[name] = HandlerSpec.model_validate(rendered_handler)
                except Exception as exc:
                    raise RoleError(f"{role.path}: handlers.{name}: {exc}") from None
    return out


__all__ = ["ExpandedRoles", "ManifestError", "Role", "expand_roles", "ordered_roles", "role_search_path"]
