"""Package layout that pyproject.toml cannot express alone: roles/, templates/ and manifests/base/ sit
in the tree and ship inside the wheel as provisioner.roles, provisioner.templates and provisioner.bases."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["provisioner", "provisioner.*"]), "provisioner.roles", "provisioner.templates",
              "provisioner.bases"],
    package_dir={"provisioner.roles": "roles", "provisioner.templates": "templates",
                 "provisioner.bases": "manifests/base"},
)
