"""Base manifests shipped in the package: `extends: builtin:NAME`."""
