"""Jinja2 rendering: role values (native types) and file templates (text), both strict about undefined names."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from itertools import chain, islice
from pathlib import Path
from typing import Any

import jinja2
from jinja2.loaders import split_template_path
from jinja2.nativetypes import NativeEnvironment, NativeTemplate
from jinja2.sandbox import ImmutableSandboxedEnvironment

from provisioner.errors import TemplateError
from provisioner.input_file import InputFileError, read_input_text


def _concat(values: Iterator[Any]) -> Any:
    """Like jinja2's native concat, minus its literal_eval: the string "3.11" must stay a string."""
    head = list(islice(values, 2))
    if not head:
        return None
    if len(head) == 1:
        if isinstance(head[0], jinja2.Undefined):
            str(head[0])  # StrictUndefined raises here, naming the missing variable
        return head[0]
    return "".join(str(v) for v in chain(head, values))


# Sandboxed: roles and templates can come with a manifest from someone else, and rendering them must not
# reach Python's internals (`''.__class__.__mro__`) or build a range of a billion items.
class _NativeEnvironment(ImmutableSandboxedEnvironment, NativeEnvironment):
    concat = staticmethod(_concat)  # type: ignore[assignment]


class _NativeTemplate(NativeTemplate):
    environment_class = _NativeEnvironment


_NativeEnvironment.template_class = _NativeTemplate


_native = _NativeEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def package_templates_dir() -> Path:
    return Path(str(resources.files("provisioner.templates")))


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside `value`; a string that is one expression keeps its native type."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        return _native_template(value).render(**context)
    if isinstance(value, Mapping):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, Sequence):
        return [render_value(item, context) for item in value]
    return value


@lru_cache(maxsize=4096)
def _native_template(source: str) -> jinja2.Template:
    """Compiled once per distinct string: a fleet expands the same role values for every host."""
    return _native.from_string(source)


class _BoundedFileLoader(jinja2.FileSystemLoader):
    """jinja2's file loader, reading through the input-file checks: a template that is a FIFO, a device or
    larger than the input limit is an error, not a hang."""

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        pieces = split_template_path(template)  # refuses '..'
        for directory in self.searchpath:
            path = os.path.join(directory, *pieces)
            if not os.path.lexists(path):
                continue
            try:
                text = read_input_text(path)
            except InputFileError as exc:
                raise TemplateError(f"template {template!r}: {exc}") from None
            mtime = os.path.getmtime(path)

            def unchanged(path: str = path, mtime: float = mtime) -> bool:
                try:
                    return os.path.getmtime(path) == mtime
                except OSError:
                    return False

            return text, os.path.normpath(path), unchanged
        raise jinja2.TemplateNotFound(template)


@lru_cache(maxsize=64)
def _file_environment(search_path: tuple[Path, ...]) -> jinja2.Environment:
    """One environment per template search path, shared by every expansion that uses it, so that each
    template is compiled once per run rather than once per host (jinja2 still reloads a template whose
    file changed on disk)."""
    return ImmutableSandboxedEnvironment(
        loader=_BoundedFileLoader([str(p) for p in search_path]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


class TemplateRenderer:
    """Renders file templates found in the manifest's templates/ folder, then the packaged ones."""

    def __init__(self, search_path: Sequence[Path]) -> None:
        self.search_path = [p for p in search_path if p.is_dir()]
        self.environment = _file_environment(tuple(self.search_path))

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
        except (TypeError, ValueError, AttributeError, LookupError, ArithmeticError) as exc:
            raise TemplateError(f"template {name!r}: cannot render it from the manifest's values: {exc}") from None
