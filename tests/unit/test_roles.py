"""Roles: lookup, dependencies, defaults vs vars, loop/when, overrides, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.errors import ProvisionError, RoleError, TemplateError
from provisioner.expand import expand
from provisioner.manifest import load_manifest


def _manifest(tmp_path: Path, body: dict[str, object]) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "t", **body}))
    return path


def _role(directory: Path, name: str, body: dict[str, object]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(body))


def test_builtin_roles_expand_with_defaults_loop_and_when(tmp_path: Path) -> None:
    path = _manifest(tmp_path, {"roles": ["layout", "python-env"], "env": {"X": "1"}})
    ids = [r.id for r in expand(load_manifest(path), environ={}).resources]
    assert ids == [
        "directory:models", "directory:models/checkpoints", "directory:models/diffusion_models",
        "directory:models/loras", "directory:models/text_encoders", "directory:models/vae",
        "directory:logs", "envfile:comfyui.env", "venv:venv",
    ], "no pip resource: python_packages is empty, so its `when` is false"


def test_user_roles_dependencies_vars_and_overrides(tmp_path: Path) -> None:
    roles = tmp_path / "myroles"
    _role(roles, "base", {"defaults": {"dir": "base-dir"}, "resources": [{"kind": "directory", "path": "{{ dir }}"}]})
    _role(roles, "app", {
        "depends": ["base"],
        "defaults": {"port": 1},
        "resources": [{"kind": "file", "path": "app.conf", "content": "port={{ port }} dir={{ dir }}\n"}],
    })
    path = _manifest(tmp_path, {
        "roles": ["app"], "role_paths": ["myroles"], "vars": {"port": 8188},
        "resources": [{"kind": "directory", "path": "base-dir", "mode": "0700"}],
    })
    expansion = expand(load_manifest(path), environ={})
    by_id = {r.id: r for r in expansion.resources}
    assert list(by_id) == ["directory:base-dir", "file:app.conf"], "dependencies come first"
    assert by_id["file:app.conf"].spec["content"] == "port=8188 dir=base-dir\n", "vars override role defaults"
    assert by_id["directory:base-dir"].spec["mode"] == "0700", "a manifest resource replaces the role's"
    assert by_id["directory:base-dir"].origin == "manifest"


def test_unknown_role_lists_what_exists(tmp_path: Path) -> None:
    path = _manifest(tmp_path, {"roles": ["nosuch"]})
    with pytest.raises(RoleError, match=r"unknown role 'nosuch'.*Available roles: .*layout"):
        expand(load_manifest(path), environ={})


def test_role_cycle_and_undefined_variable(tmp_path: Path) -> None:
    roles = tmp_path / "r"
    _role(roles, "a", {"depends": ["b"]})
    _role(roles, "b", {"depends": ["a"]})
    _role(roles, "c", {"resources": [{"kind": "directory", "path": "{{ missing_var }}"}]})
    with pytest.raises(RoleError, match="role dependency cycle: a -> b -> a"):
        expand(load_manifest(_manifest(tmp_path, {"roles": ["a"], "role_paths": ["r"]})), environ={})
    with pytest.raises(RoleError, match=r"c.yaml:\d+: resources\[0\]: 'missing_var' is undefined"):
        expand(load_manifest(_manifest(tmp_path, {"roles": ["c"], "role_paths": ["r"]})), environ={})


def test_role_rendering_to_an_unsafe_value_is_refused(tmp_path: Path) -> None:
    roles = tmp_path / "r"
    _role(roles, "evil", {"resources": [{"kind": "directory", "path": "{{ target_dir }}"}]})
    path = _manifest(tmp_path, {"roles": ["evil"], "role_paths": ["r"], "vars": {"target_dir": "../../etc"}})
    # The fix belongs in the manifest field the value came from, so that is where the error points.
    with pytest.raises(RoleError, match=r"m.yaml:\d+:\d+: vars.target_dir: path '../../etc' must not contain '\.\.' "
                       r"segments.*reaches role evil as directory.path, .*evil.yaml:\d+: resources\[0\]"):
        expand(load_manifest(path), environ={})
    _role(roles, "evil", {"resources": [{"kind": "directory", "path": "{{ target_dir }}/x", "mode": "{{ 1 }}"}]})
    path = _manifest(tmp_path, {"roles": ["evil"], "role_paths": ["r"], "vars": {"target_dir": "ok"}})
    with pytest.raises(RoleError, match=r"evil.yaml:\d+: resources\[0\]: a rendered resource is invalid: "
                       r"directory.mode: mode '1' must be an octal string"):
        expand(load_manifest(path), environ={})


def test_malformed_role_file_is_located(tmp_path: Path) -> None:
    roles = tmp_path / "r"
    roles.mkdir()
    (roles / "bad.yaml").write_text("resources: []\ndefualts: {}\n")
    expected = r"bad.yaml:2:1: defualts: unknown key 'defualts'; did you mean 'defaults'"
    with pytest.raises(ProvisionError, match=expected):
        expand(load_manifest(_manifest(tmp_path, {"roles": ["bad"], "role_paths": ["r"]})), environ={})


def test_missing_template_and_unknown_handler(tmp_path: Path) -> None:
    path = _manifest(tmp_path, {"resources": [{"kind": "file", "path": "x", "template": "absent.j2"}]})
    with pytest.raises(TemplateError, match="template 'absent.j2' not found"):
        expand(load_manifest(path), environ={})
    path = _manifest(tmp_path, {"resources": [{"kind": "file", "path": "x", "content": "", "notify": ["nope"]}]})
    with pytest.raises(ProvisionError, match="notifies unknown handler 'nope'"):
        expand(load_manifest(path), environ={})


def test_missing_secret_names_the_variable(tmp_path: Path) -> None:
    path = _manifest(tmp_path, {"resources": [
        {"kind": "envfile", "path": "e", "secrets": {"HF_TOKEN": {"from_env": "ABSENT_TOKEN"}}}]})
    with pytest.raises(ProvisionError, match=r"secret HF_TOKEN reads \$ABSENT_TOKEN, which is not set"):
        expand(load_manifest(path), environ={})
    expansion = expand(load_manifest(path), environ={"ABSENT_TOKEN": "s3cret-value"})
    assert expansion.secrets == ["s3cret-value"]
    assert expansion.secret_values_by_key() == {"HF_TOKEN": "s3cret-value"}
