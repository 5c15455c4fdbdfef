"""Bad manifests: every problem reported at once, with file:line:column, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.errors import ManifestError
from provisioner.manifest import load_manifest


def _errors(tmp_path: Path, text: str, name: str = "m.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return [str(issue) for issue in caught.value.issues]


def test_unknown_keys_get_a_did_you_mean_hint_with_their_position(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "name: a\ntargt:\n  root: /x\ngpu:\n  arch: sm_86\n  indx: 1\n")
    assert errors == [
        f"{tmp_path}/m.yaml:2:1: targt: unknown key 'targt'; did you mean 'target'?",
        f"{tmp_path}/m.yaml:6:3: gpu.indx: unknown key 'indx'; did you mean 'index'?",
    ]


def test_unknown_key_inside_a_resource_uses_that_kind_fields(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "name: a\nresources:\n  - kind: directory\n    path: x\n    mod: '0755'\n")
    assert errors == [f"{tmp_path}/m.yaml:5:5: resources[0].mod: unknown key 'mod'; did you mean 'mode'?"]


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "name: a\nenv:\n  A: '1'\n  A: '2'\n")
    assert errors == [f"{tmp_path}/m.yaml:4:3: env.A: duplicate key 'A' (first defined on line 3); keep only one"]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "name: a\nenv: [1,\n")
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path}/m.yaml:3:1: invalid YAML")


def test_wrong_types_and_missing_fields(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "description: x\nservice:\n  port: http\n")
    assert f"{tmp_path}/m.yaml:1:1: name: required field is missing" in errors
    assert any(e.startswith(f"{tmp_path}/m.yaml:3:3: service.port: Input should be a valid integer") for e in errors)


@pytest.mark.parametrize(
    ("resource", "fragment"),
    [
        ("{kind: file, path: ../etc/passwd, content: x}", "must not contain '..' segments"),
        ("{kind: file, path: /etc/passwd, content: x}", "must be relative to the target root"),
        ("{kind: directory, path: 'a;rm -rf b'}", "shell metacharacters (';')"),
        ("{kind: git, path: src, repo: 'https://h/x$(id)'}", "shell metacharacters"),
        ("{kind: git, path: src, repo: 'https://h/x', ref: '--upload-pack=evil'}", "is not a valid git ref"),
        ("{kind: pip, venv: v, packages: ['torch>=2']}", "is not an exact pin"),
        ("{kind: command, name: c, argv: ['true']}", "needs a guard"),
        ("{kind: bogus, path: x}", "does not match any of the expected tags"),
        ("{kind: directory, path: x, mode: '999'}", "must be an octal string"),
    ],
)
def test_unsafe_or_invalid_resource_values_are_refused(tmp_path: Path, resource: str, fragment: str) -> None:
    errors = _errors(tmp_path, f"name: a\nresources:\n  - {resource}\n")
    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path}/m.yaml:3:")
    assert fragment in errors[0]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "name: 'bad name'\ngpu: {arch: sm_9x}\nservice: {port: 0}\nbogus: 1\n")
    assert [e.split(": ")[1] for e in errors] == ["name", "gpu.arch", "service.port", "bogus"]


def test_extends_merges_and_errors_point_into_the_right_file(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("name: base\nenv:\n  A: '1'\n  B: '2'\nservice:\n  port: 9000\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\nenv:\n  B: '3'\n")
    loaded = load_manifest(tmp_path / "child.yaml")
    assert loaded.manifest.name == "child"
    assert loaded.manifest.env == {"A": "1", "B": "3"}
    assert loaded.manifest.service.port == 9000

    (tmp_path / "base.yaml").write_text("name: base\nservice:\n  prot: 9000\n")
    errors = _errors(tmp_path, "extends: base.yaml\nname: child\n", "child.yaml")
    assert errors == [f"{tmp_path}/base.yaml:3:3: service.prot: unknown key 'prot'; did you mean 'port'?"]


def test_extends_cycles_and_missing_bases(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(ManifestError, match="extends cycle"):
        load_manifest(tmp_path / "a.yaml")
    errors = _errors(tmp_path, "extends: nowhere.yaml\nname: c\n", "c.yaml")
    assert errors == [f"{tmp_path}/c.yaml:1:1: extends: base manifest 'nowhere.yaml' not found "
                      f"(looked for {tmp_path}/nowhere.yaml)"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="file not found"):
        load_manifest(tmp_path / "absent.yaml")


def test_shipped_manifests_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "manifests"
    manifests = [p for p in sorted(root.rglob("*.yaml")) if not p.name.startswith("fleet")]
    assert len(manifests) >= 8
    for path in manifests:
        load_manifest(path)
