"""Hostile manifests, one kind at a time: each is refused with file:line[:column], the field and the fix."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from provisioner.agent.kinds import git as git_kind
from provisioner.agent.kinds import venv as venv_kind
from provisioner.agent.protocol import Context, ResourceFailure
from provisioner.cli import cli
from provisioner.errors import ManifestError, ProvisionError
from provisioner.expand import expand
from provisioner.manifest import load_manifest
from provisioner.manifest.source import MAX_YAML_DEPTH, MAX_YAML_VALUES


def _refused(tmp_path: Path, text: str | bytes, name: str = "m.yaml") -> list[str]:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return [str(issue) for issue in caught.value.issues]


def _expand_refused(tmp_path: Path, body: dict[str, object]) -> str:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "m", **body}, sort_keys=False))
    with pytest.raises(ProvisionError) as caught:
        expand(load_manifest(path), environ={})
    return str(caught.value)


def _billion_laughs(levels: int = 10, width: int = 10) -> str:
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * width)}]" for n in range(1, levels)]
    return "name: m\nvars:\n" + "".join(f"  {line}\n" for line in lines)


def test_billion_laughs_is_refused_fast_and_small(tmp_path: Path) -> None:
    """10^9 strings if expanded; refused from the node graph (ten nodes) before anything is copied."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    errors = _refused(tmp_path, _billion_laughs())
    assert time.monotonic() - started < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: < 100 MB grown
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path}/m.yaml:")
    assert f"expands to more than {MAX_YAML_VALUES} values through aliases" in errors[0]


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    errors = _refused(tmp_path, "name: m\nvars:\n  loop: &self [*self]\n")
    assert errors == [f"{tmp_path}/m.yaml:3:9: an alias ('*') refers to the anchor ('&') it is inside of; "
                      "write the value out"]


@pytest.mark.parametrize("depth", [MAX_YAML_DEPTH + 1, 100_000])
def test_deep_nesting_is_refused_without_recursion_errors(tmp_path: Path, depth: int) -> None:
    errors = _refused(tmp_path, "name: m\nvars:\n  deep: " + "[" * depth + "]" * depth + "\n")
    assert len(errors) == 1 and f"YAML nests deeper than {MAX_YAML_DEPTH} levels" in errors[0]
    assert errors[0].startswith(f"{tmp_path}/m.yaml:3:")


def test_nesting_up_to_the_limit_is_accepted(tmp_path: Path) -> None:
    depth = MAX_YAML_DEPTH - 2  # vars, then `deep`, then the lists
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nvars:\n  deep: " + "[" * depth + "]" * depth + "\n")
    value = load_manifest(path).manifest.vars["deep"]
    for _ in range(depth - 1):
        value = value[0]
    assert value == []


@pytest.mark.parametrize(("tag", "fragment"), [
    ("!!python/object/apply:os.system ['id']", "unsupported YAML tag !!python/object/apply:os.system"),
    ("!!python/name:os.system x", "unsupported YAML tag !!python/name:os.system"),
    ("!!binary aGVsbG8=", "unsupported YAML tag !!binary"),
    ("!custom x", "unsupported YAML tag !custom"),
    ("!!set {a: null}", "unsupported YAML tag !!set"),
    ("!!omap [a: 1]", "unsupported YAML tag !!omap"),
    ("!!int twelve", "'twelve' is not a valid !!int"),
    ("!!float x", "'x' is not a valid !!float"),
    ("!!bool maybe", "'maybe' is not a valid !!bool"),
    ("1" * 5000, "is not a valid !!int (Exceeds the limit (4300 digits)"),
])
def test_every_scalar_tag_error_is_located(tmp_path: Path, tag: str, fragment: str) -> None:
    errors = _refused(tmp_path, f"name: m\ndescription: d\nservice:\n  port: {tag}\n")
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{tmp_path}/m.yaml:4:9: service.port: ") and fragment in errors[0]


def test_a_date_stays_the_text_it_was_written_as(tmp_path: Path) -> None:
    """An unquoted 2025-01-01 or a bad one (2025-13-45) in vars is not a datetime that JSON cannot carry."""
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nvars:\n  released: 2025-01-01\n  odd: 2025-13-45\n")
    assert load_manifest(path).manifest.vars == {"released": "2025-01-01", "odd": "2025-13-45"}


@pytest.mark.parametrize(("escape", "shown"), [(r"\ud800", r"'\ud800'"), (r"a\udfffb", r"'\udfff'"),
                                               (r"x\0y", r"'\x00'")])
def test_lone_surrogates_and_nul_are_located(tmp_path: Path, escape: str, shown: str) -> None:
    errors = _refused(tmp_path, f'name: m\ndescription: "{escape}"\n')
    assert errors == [f"{tmp_path}/m.yaml:2:14: description: the string contains {shown} (a NUL or a lone "
                      "UTF-16 surrogate), which no file, path or program argument can hold; remove it"]


@pytest.mark.parametrize(("raw", "line", "column", "hex_bytes"), [
    (b"name: m\ndescription: caf\xe9\n", 2, 17, "e9"),
    (b"name: m\nenv:\n  A: '\xed\xa0\x80'\n", 3, 7, "ed"),  # a surrogate encoded in UTF-8
    (b"name: \xc3\xa9\xff\n", 1, 8, "ff"),  # the column counts characters, not bytes
])
def test_invalid_utf8_names_its_line_and_column(tmp_path: Path, raw: bytes, line: int, column: int,
                                                hex_bytes: str) -> None:
    errors = _refused(tmp_path, raw)
    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path}/m.yaml:{line}:{column}: invalid UTF-8 (bytes {hex_bytes}")


def test_control_characters_in_the_file_are_located(tmp_path: Path) -> None:
    errors = _refused(tmp_path, "name: m\ndescription: a\x07b\n")
    assert errors == [f"{tmp_path}/m.yaml:2:15: invalid YAML: character '\\x07' is not allowed in YAML; remove it "
                      "(write control characters as escapes in a double-quoted string)"]


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    with path.open("wb") as handle:
        handle.write(b"name: m\n" + b"# filler\n" * 10 + b"x" * (5 * 1024 * 1024))
    errors = _refused(tmp_path, path.read_bytes())
    assert errors == [f"{tmp_path}/m.yaml:12: the file is larger than 4 MiB, the limit for an input file "
                      "(reached on this line); is this the right file?"]


def test_huge_values_are_shown_shortened(tmp_path: Path) -> None:
    errors = _refused(tmp_path, f"name: m\nservice:\n  port: '{'9' * 1_000_000}'\n")
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path}/m.yaml:3:3: service.port: ")
    assert len(errors[0]) < 1000 and "[1000002 characters]" in errors[0]


def test_a_long_extends_name_is_refused(tmp_path: Path) -> None:
    errors = _refused(tmp_path, f"name: m\nextends: {'x' * 5000}\n")
    assert errors == [f"{tmp_path}/m.yaml:2:1: extends: extends names a file by a relative path of 1 to 1024 "
                      "characters; got 5000 characters"]
    errors = _refused(tmp_path, f"name: m\nextends: {'x' * 300}.yaml\n")  # a name longer than NAME_MAX
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path}/m.yaml:2:1: extends: base manifest")
    assert "the file name is too long for this system" in errors[0]


def test_an_extends_cycle_is_located_at_the_extends_key(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nextends: b.yaml\n")
    errors = _refused(tmp_path, "name: b\nextends: a.yaml\n", "b.yaml")
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path}/a.yaml:2:1: extends: extends cycle")


def test_an_unknown_role_is_located_in_the_manifest(tmp_path: Path) -> None:
    message = _expand_refused(tmp_path, {"roles": ["layout", "lyaout"]})
    assert f"{tmp_path}/m.yaml:4:3: roles[1]: unknown role 'lyaout'" in message and "Available roles:" in message


def test_a_missing_template_is_located_in_the_manifest(tmp_path: Path) -> None:
    message = _expand_refused(tmp_path, {"resources": [{"kind": "file", "path": "f", "template": "absent.j2"}]})
    assert f"{tmp_path}/m.yaml:5:3: resources[0].template: template 'absent.j2' not found" in message


def test_duplicate_resource_ids_in_the_manifest_are_refused(tmp_path: Path) -> None:
    message = _expand_refused(tmp_path, {"resources": [{"kind": "directory", "path": "d"},
                                                       {"kind": "directory", "path": "d", "mode": "0700"}]})
    assert (f"{tmp_path}/m.yaml:5:3: resources[1]: resource directory:d is declared twice "
            "(first at resources[0], line 3)") in message


def test_an_invalid_value_reaching_a_role_names_the_manifest_field(tmp_path: Path) -> None:
    message = _expand_refused(tmp_path, {"roles": ["python-env"],
                                         "vars": {"python_packages": ["torch>=2.0", "tqdm==4.67.1"]}})
    assert f"{tmp_path}/m.yaml:6:5: vars.python_packages[0]: 'torch>=2.0' is not an exact pin" in message
    assert "this value reaches role python-env as pip.packages[0]" in message


def test_a_var_of_the_wrong_type_is_located_at_the_roles_entry(tmp_path: Path) -> None:
    message = _expand_refused(tmp_path, {"roles": ["python-env"], "vars": {"python_packages": 5}})
    assert f"{tmp_path}/m.yaml:3:3: roles[0]: role 'python-env': " in message
    assert "python-env.yaml:15: resources[1]: cannot render it from the manifest's values" in message


@pytest.mark.parametrize(("section", "field", "value", "fragment"), [
    ("service", "port", 0, "Input should be greater than or equal to 1"),
    ("service", "port", 65536, "Input should be less than or equal to 65535"),
    ("service", "port", "http", "Input should be a valid integer"),
    ("target", "port", -22, "Input should be greater than or equal to 1"),
])
def test_bad_ports_are_located(tmp_path: Path, section: str, field: str, value: object, fragment: str) -> None:
    errors = _refused(tmp_path, yaml.safe_dump({"name": "m", section: {field: value}}, sort_keys=False))
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path}/m.yaml:3:3: {section}.{field}: ")
    assert fragment in errors[0]


# Destructive values: refused at validate, before anything reaches a host.

@pytest.mark.parametrize(("body", "field", "fragment"), [
    ({"resources": [{"kind": "venv", "path": "."}]}, "resources[0].path", "path '.' is the target root itself"),
    ({"resources": [{"kind": "git", "path": "./", "repo": "https://h.example/x", "force": True}]},
     "resources[0].path", "path './' is the target root itself"),
    ({"resources": [{"kind": "git", "path": "", "repo": "https://h.example/x"}]}, "resources[0].path",
     "path must not be empty"),
    ({"resources": [{"kind": "download", "path": "./.", "url": "https://h.example/x"}]}, "resources[0].path",
     "is the target root itself"),
    ({"python": {"venv": "."}}, "python.venv", "path '.' is the target root itself"),
    ({"comfyui": {"path": "./."}}, "comfyui.path", "is the target root itself"),
    ({"target": {"root": ""}}, "target.root", "target.root must not be empty"),
    ({"target": {"root": "/"}}, "target.root", "target.root must not be '/'"),
    ({"resources": [{"kind": "service", "name": "s", "argv": ["x"],
                     "description": "ComfyUI\n[Service]\nExecStartPre=/bin/sh"}]},
     "resources[0].description", "must be one line without control characters; it contains '\\n'"),
    ({"env": {"A": "1\nB=2"}}, "env.A", "an environment value must be one line"),
    ({"env": {"A": "1\r"}}, "env.A", "an environment value must be one line"),
    ({"env": {"A": "a\u2028b"}}, "env.A", "an environment value must be one line"),
    ({"env": {"A": "joins\\"}}, "env.A", "must not end with a backslash"),
    ({"resources": [{"kind": "envfile", "path": "e.env", "values": {"K": "v\nX=1"}}]},
     "resources[0].values.K", "an environment value must be one line"),
    ({"resources": [{"kind": "command", "name": "c", "argv": ["true"], "creates": "x", "env": {"K": "\n"}}]},
     "resources[0].env.K", "an environment value must be one line"),
    ({"resources": [{"kind": "directory", "path": "a\x1bb"}]}, "resources[0].path", "control characters"),
])
def test_destructive_values_are_refused_at_validate(tmp_path: Path, body: dict[str, object], field: str,
                                                    fragment: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "m", **body}, sort_keys=False))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"{path}:" in result.output and f" {field}: " in result.output and fragment in result.output


def test_a_secret_with_a_line_break_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "m", "roles": ["layout"], "secrets": {"TOKEN": {"from_env": "T"}}}))
    with pytest.raises(ProvisionError) as caught:
        expand(load_manifest(path), environ={"T": "hf_secret\nINJECTED=1"})
    assert "secret TOKEN read from $T has a line break" in str(caught.value)
    assert "hf_secret" not in str(caught.value) and "INJECTED" not in str(caught.value)


@pytest.mark.parametrize("kind", [venv_kind, git_kind])
def test_the_agent_refuses_to_replace_or_clean_the_root_itself(tmp_path: Path, kind: object) -> None:
    """Defense in depth: a controller that skipped validation still cannot make the agent wipe the root."""
    (tmp_path / "keep.txt").write_text("precious")
    ctx = Context(str(tmp_path))
    spec = {"path": ".", "repo": "https://h.example/x", "python": "python3"}
    observed = {"exists": True, "is_repo": True, "resolved": {"commit": "0" * 40, "short": "0"}}
    with pytest.raises(ResourceFailure, match="is the target root itself"):
        kind.apply(spec, observed, [], ctx)  # type: ignore[attr-defined]
    assert (tmp_path / "keep.txt").read_text() == "precious"


# Usage errors exit 1: 2 means drift.

@pytest.mark.parametrize("args", [
    [], ["--bogus"], ["nosuch"], ["validate"], ["validate", "a", "b"], ["plan", "--bogus", "m.yaml"],
    ["apply", "--download-cache"], ["rollback", "m.yaml", "--to", "x"], ["generations"], ["facts"],
    ["history", "--limit", "x"], ["check", "--only"], ["lock", "--bogus"], ["resolve"], ["fleet"],
    ["fleet", "nosuch"], ["fleet", "plan"], ["fleet", "apply", "--forks", "x", "f.yaml"], ["fleet", "plan", "-x"],
])
def test_usage_errors_exit_1_never_2(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, (args, result.exit_code, result.output)
    assert "Usage:" in result.output or "Error:" in result.output


def test_help_still_exits_0() -> None:
    assert CliRunner().invoke(cli, ["--help"]).exit_code == 0
    assert CliRunner().invoke(cli, ["fleet", "plan", "--help"]).exit_code == 0


def test_infinite_or_huge_timeouts_are_refused(tmp_path: Path) -> None:
    errors = _refused(tmp_path, "name: m\ntarget:\n  connect_timeout: .inf\n  command_timeout: 1.0e+40\n")
    assert errors == [
        f"{tmp_path}/m.yaml:3:3: target.connect_timeout: Input should be less than or equal to 3600 (got inf)",
        f"{tmp_path}/m.yaml:4:3: target.command_timeout: Input should be less than or equal to 604800 (got 1e+40)",
    ]


def test_an_alias_cannot_place_a_value_deeper_than_the_limit(tmp_path: Path) -> None:
    text = ("name: m\nvars:\n  x: &deep " + "[" * 40 + "]" * 40 + "\n  y: " + "[" * 40 + "*deep" + "]" * 40 + "\n")
    errors = _refused(tmp_path, text)
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path}/m.yaml:3:")
    assert f"through aliases ('*') the YAML nests deeper than {MAX_YAML_DEPTH} levels" in errors[0]


@pytest.mark.parametrize(("expression", "fragment"), [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "access to attribute '__class__' of 'str' object is unsafe"),
    ("{{ range(10 ** 9) | list | length }}", "The sandbox blocks ranges larger than MAX_RANGE"),
    ("{{ vars.python_packages.append('evil==1') }}", "access to attribute 'append' of 'list' object is unsafe"),
])
def test_templates_and_roles_from_a_manifest_render_in_a_sandbox(tmp_path: Path, expression: str,
                                                                  fragment: str) -> None:
    """A role or template shipped with someone else's manifest cannot reach Python's internals."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "evil.j2").write_text(expression + "\n")
    message = _expand_refused(tmp_path, {"vars": {"python_packages": ["a==1"]},
                                         "resources": [{"kind": "file", "path": "f", "template": "evil.j2"}]})
    assert f"{tmp_path}/m.yaml:8:3: resources[0].template: template 'evil.j2': " in message and fragment in message
    roles = tmp_path / "roles"
    roles.mkdir()
    (roles / "evil.yaml").write_text(yaml.safe_dump({"resources": [{"kind": "directory", "path": expression}]}))
    message = _expand_refused(tmp_path, {"roles": ["evil"], "role_paths": ["roles"],
                                         "vars": {"python_packages": ["a==1"]}})
    assert "evil.yaml:2: resources[0]: " in message and fragment in message
