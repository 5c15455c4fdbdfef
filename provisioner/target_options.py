"""--target, -i and --root: point a manifest at a host from the command line, over its target section.

The values are validated by the manifest's own Target model, so the command line accepts exactly what the
manifest would (no shell metacharacters, no '/' root); host keys stay strictly checked either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from provisioner.errors import ProvisionError
from provisioner.manifest import LoadedManifest, load_manifest
from provisioner.manifest.model import Target

F = TypeVar("F", bound=Callable[..., Any])


class TargetOptionError(ProvisionError):
    """A --target, -i or --root value the manifest's target section would refuse too."""


@dataclass(frozen=True)
class TargetOverride:
    """What the command line says about the target; empty fields leave the manifest's as they are."""

    connection: str | None = None
    identity_file: Path | None = None
    root: str | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.connection, self.identity_file, self.root))

    def target(self, base: Target | None = None) -> Target:
        """`base` (default: the defaults) with the overrides applied and validated as the manifest is."""
        data = (base or Target()).model_dump()
        if self.connection is not None:
            data["connection"] = self.connection
            # The URL names the user and port; the manifest's belong to the host it named.
            data["user"] = data["port"] = None
        if self.identity_file is not None:
            data["identity_file"] = str(self.identity_file)
        if self.root is not None:
            data["root"] = self.root
        try:
            return Target.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            option = {"connection": "--target", "root": "--root", "identity_file": "-i"}.get(
                str(error["loc"][0]) if error["loc"] else "", "--target")
            reason = str(error["msg"]).removeprefix("Value error, ")
            raise TargetOptionError(f"{option}: {reason}") from None

    def apply(self, loaded: LoadedManifest) -> LoadedManifest:
        if not self:
            return loaded
        manifest = loaded.manifest.model_copy(update={"target": self.target(loaded.manifest.target)})
        return LoadedManifest(manifest, loaded.path, loaded.source)

    def load(self, path: Path) -> LoadedManifest:
        """load_manifest, then these overrides."""
        return self.apply(load_manifest(path))


def _identity(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and not value.expanduser().is_file():
        raise click.BadParameter(f"{value} is not a file: name the private key to log in with", ctx, param)
    return value


def target_options(func: F) -> F:
    """Add --target / -i / --root and hand the command one `target_override: TargetOverride`."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["target_override"] = TargetOverride(kwargs.pop("target_connection"), kwargs.pop("identity_file"),
                                                   kwargs.pop("target_root"))
        return func(*args, **kwargs)

    wrapped: Any = wrapper
    wrapped = click.option("--root", "target_root", default=None, metavar="DIR",
                           help="Target root on the host, over the manifest's target.root.")(wrapped)
    wrapped = click.option("-i", "--identity", "identity_file", default=None, callback=_identity,
                           type=click.Path(path_type=Path, dir_okay=False),
                           help="SSH private key, over the manifest's target.identity_file.")(wrapped)
    wrapped = click.option("--target", "target_connection", default=None, metavar="TARGET",
                           help="Host to use instead of the manifest's target: local, "
                           "ssh://user@host[:port] or docker://CONTAINER.")(wrapped)
    return wrapped  # type: ignore[no-any-return]
