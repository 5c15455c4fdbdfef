"""Desired-state resource specs (controller side); their probe/diff/apply logic lives in the host agent."""

from provisioner.resources.specs import (
    RESOURCE_KINDS,
    CommandSpec,
    DirectorySpec,
    DownloadSpec,
    EnvFileSpec,
    FileSpec,
    GitSpec,
    PipSpec,
    ResourceSpec,
    ServiceUnitSpec,
    VenvSpec,
    WheelBuildSpec,
    resource_id,
)

__all__ = [
    "RESOURCE_KINDS",
    "CommandSpec",
    "DirectorySpec",
    "DownloadSpec",
    "EnvFileSpec",
    "FileSpec",
    "GitSpec",
    "PipSpec",
    "ResourceSpec",
    "ServiceUnitSpec",
    "VenvSpec",
    "WheelBuildSpec",
    "resource_id",
]
