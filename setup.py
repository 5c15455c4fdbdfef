"""Package layout that pyproject.toml cannot express alone: roles/ and templates/ sit at the top of
the tree and ship inside the wheel as provisioner.roles and provisioner.templates."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["provisioner", "provisioner.*"]), "provisioner.roles", "provisioner.templates"],
    package_dir={"provisioner.roles": "roles", "provisioner.templates": "templates"},
)
