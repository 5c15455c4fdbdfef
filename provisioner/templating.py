"""Jinja2 rendering: role values (native types) and file templates (text), both strict about undefined names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2.nativetypes import NativeEnvironment

from provisioner.errors import TemplateError

_native = NativeEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def package_templates_dir() -> Path:
    return Path(str(resources.files("provisioner.templates")))


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside `value`; a string that is one expression keeps its native type."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        return _native.from_string(value).render(**context)
    if isinstance(value, Mapping):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, Sequence):
        return [render_value(item, context) for item in value]
    return value


class TemplateRenderer:
    """Renders file templates found in the manifest's templates/ folder, then the packaged ones."""

    def __init__(self, search_path: Sequence[Path]) -> None:
        self.search_path = [p for p in search_path if p.is_dir()]
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(p) for p in self.search_path]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
        )

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        try:
            template = self.environment.get_template(name)
        except jinja2.TemplateNotFound:
            where = ", ".join(str(p) for p in self.search_path) or "(no template folders)"
            raise TemplateError(f"template {name!r} not found; looked in {where}") from None
        try:
            return template.render(**context)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"template {name!r}: {exc.message}; define it under vars:") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {name!r}: {exc}") from None
