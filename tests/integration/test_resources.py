"""Every resource kind: apply from empty, re-apply is a no-op, tamper shows exactly that drift, apply fixes it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from provisioner.report import Masker, render_apply, render_plan
from tests.support.gitrepos import UpstreamRepo, git
from tests.support.hosts import TargetHost, installed_version, write_manifest
from tests.support.installers import INSTALLERS, installed_by, place_uv
from tests.support.runs import apply, changed, converge, pending, plan, statuses
from tests.support.servers import serve_directory
from tests.support.wheels import (
    OLDER_TORCH_RELEASE,
    build_torch_wheels,
    build_unrelated_nunchaku,
    build_wheel,
    write_simple_index,
)


def test_directory_mode_drift_and_recreate(host: TargetHost, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "directory", "path": "data/models", "mode": "0750"},
    ]})
    converge(manifest)
    assert host.sh(f"stat -c %a {host.path('data/models')}").strip() == "750"

    host.run(["chmod", "0777", host.path("data/models")])
    report = plan(manifest)
    assert report.exit_code() == 2
    assert pending(report) == {"directory:data/models": ["mode"]}
    assert statuses(report)["directory:data/models"] == "drifted"
    assert changed(apply(manifest)) == ["directory:data/models"]

    # Removed behind our back after an apply converged it: drift, not a first-time creation.
    host.run(["rm", "-r", host.path("data/models")])
    assert statuses(plan(manifest))["directory:data/models"] == "drifted"
    converge(manifest)


def test_file_literal_and_template(host: TargetHost, tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "greeting.j2").write_text("hello {{ who }} on port {{ service.port }}\n")
    manifest = write_manifest(tmp_path, host, {
        "vars": {"who": "world"},
        "resources": [
            {"kind": "file", "path": "etc/literal.txt", "content": "literal\n", "mode": "0640"},
            {"kind": "file", "path": "etc/greeting.txt", "template": "greeting.j2"},
        ],
    })
    converge(manifest)
    assert host.read("etc/greeting.txt") == "hello world on port 8188\n"
    assert host.read("etc/literal.txt") == "literal\n"

    host.sh(f"echo tampered >> {host.path('etc/greeting.txt')}")
    report = plan(manifest)
    assert pending(report) == {"file:etc/greeting.txt": ["content"]}
    change = report.resources[1]["changes"][0]
    assert "-tampered" in change["reason"], "the drift report shows the unified diff"
    apply(manifest)
    assert host.read("etc/greeting.txt") == "hello world on port 8188\n"

    # A changed manifest is a change, not drift.
    manifest = write_manifest(tmp_path, host, {"vars": {"who": "there"}, "resources": [
        {"kind": "file", "path": "etc/literal.txt", "content": "literal\n", "mode": "0640"},
        {"kind": "file", "path": "etc/greeting.txt", "template": "greeting.j2"},
    ]})
    assert statuses(plan(manifest))["file:etc/greeting.txt"] == "change"
    converge(manifest)
    assert host.read("etc/greeting.txt") == "hello there on port 8188\n"


def test_envfile_masks_secrets_everywhere(host: TargetHost, tmp_path: Path) -> None:
    secret = "hf_secretvalue_123456"
    environ = {"TEST_HF_TOKEN": secret}
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "envfile", "path": "comfyui.env", "values": {"CUDA_VISIBLE_DEVICES": 0, "MODE": "fast"},
         "secrets": {"HF_TOKEN": {"from_env": "TEST_HF_TOKEN"}}},
    ]})
    first = converge(manifest, environ)
    assert f"HF_TOKEN={secret}" in host.read("comfyui.env")
    assert "CUDA_VISIBLE_DEVICES=0" in host.read("comfyui.env")
    assert host.sh(f"stat -c %a {host.path('comfyui.env')}").strip() == "600"
    assert secret not in json.dumps(first.as_json())
    generations = host.sh(f"cat {host.path('.provision/generations')}/*.json")
    assert generations and secret not in generations

    host.sh(f"sed -i 's/^HF_TOKEN=.*/HF_TOKEN=stolen/; s/^MODE=.*/MODE=slow/' {host.path('comfyui.env')}")
    report = plan(manifest, environ)
    assert pending(report) == {"envfile:comfyui.env": ["env.HF_TOKEN", "env.MODE"]}
    by_field = {c["field"]: c for c in report.resources[0]["changes"]}
    assert by_field["env.HF_TOKEN"]["old"] == "***" and by_field["env.HF_TOKEN"]["new"] == "***"
    assert by_field["env.MODE"]["old"] == "slow" and by_field["env.MODE"]["new"] == "fast"
    assert "stolen" not in json.dumps(report.as_json())
    apply(manifest, environ)
    assert f"HF_TOKEN={secret}" in host.read("comfyui.env")
    assert plan(manifest, environ).exit_code() == 0


def test_venv_created_with_requested_python_and_repaired(host: TargetHost, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, host, {"resources": [{"kind": "venv", "path": "venv", "python": "python3"}]})
    converge(manifest)
    version = host.run([host.path("venv/bin/python"), "-c", "import sys; print(sys.prefix)"]).stdout.strip()
    assert version == host.path("venv")

    host.run(["rm", host.path("venv/pyvenv.cfg")])
    assert pending(plan(manifest)) == {"venv:venv": ["venv"]}
    converge(manifest)


@pytest.fixture(params=INSTALLERS)
def installer(request: pytest.FixtureRequest, host: TargetHost) -> str:
    """Each pip test runs with pip and with uv (a uv in the root, where `installer: uv` puts the one it installs)."""
    if request.param == "uv":
        place_uv(host)
    return str(request.param)


def _pip_manifest(tmp_path: Path, host: TargetHost, packages: list[object], index: str, installer: str) -> Path:
    return write_manifest(tmp_path, host, {"resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "venv": "venv", "packages": packages, "index_url": index, "installer": installer},
    ]})


def test_pip_pins_versions_from_an_index(host: TargetHost, tmp_path: Path, package_index: str,
                                         installer: str) -> None:
    manifest = _pip_manifest(tmp_path, host, ["provdemo==1.0.0"], package_index, installer)
    converge(manifest)
    assert installed_version(host, "provdemo") == "1.0.0"
    assert installed_version(host, "provdep") == "1.0.0"
    assert installed_by(host, "provdemo") == installer

    pip = [host.path("venv/bin/python"), "-m", "pip", "install", "-q", "--index-url", package_index]
    host.run([*pip, "provdemo==2.0.0"])
    report = plan(manifest)
    assert pending(report) == {"pip:venv": ["package.provdemo"]}
    change = report.resources[1]["changes"][0]
    assert (change["old"], change["new"]) == ("2.0.0", "1.0.0")
    assert statuses(report)["pip:venv"] == "drifted"
    assert changed(apply(manifest)) == ["pip:venv"]
    assert installed_version(host, "provdemo") == "1.0.0"


def test_pip_detects_a_foreign_package_of_the_same_name(
    host: TargetHost, tmp_path: Path, package_index: str, wheelhouse: Path, installer: str
) -> None:
    files = package_index.rsplit("/simple", 1)[0] + "/files"
    real = wheelhouse / "provdemo-2.0.0-py3-none-any.whl"
    real_url = f"{files}/{wheelhouse.name}/{real.name}"
    impostor_url = f"{files}/impostor/{real.name}"
    sha = hashlib.sha256(real.read_bytes()).hexdigest()
    manifest = _pip_manifest(
        tmp_path, host, [{"requirement": "provdemo==2.0.0", "url": real_url, "sha256": sha}], package_index, installer
    )
    converge(manifest)

    python = host.path("venv/bin/python")
    host.run([python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", f"provdemo @ {impostor_url}"])
    assert host.run([python, "-c", "import provdemo; print(provdemo.IMPOSTOR)"]).stdout.strip() == "True"
    report = plan(manifest)
    assert pending(report) == {"pip:venv": ["package.provdemo"]}
    assert "foreign package of the same name" in report.resources[1]["changes"][0]["reason"]
    assert impostor_url in report.resources[1]["changes"][0]["reason"]

    converge(manifest)
    assert host.run([python, "-c", "import provdemo; print(hasattr(provdemo, 'IMPOSTOR'))"]).stdout.strip() == "False"
    assert installed_by(host, "provdemo") == installer


def test_pip_find_links(host: TargetHost, tmp_path: Path, package_index: str, wheelhouse: Path,
                        installer: str) -> None:
    files = package_index.rsplit("/simple", 1)[0] + f"/files/{wheelhouse.name}/"
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "venv": "venv", "packages": ["provdep==1.0.0"], "find_links": [files],
         "index_url": package_index + "/nonexistent-so-find-links-must-serve", "no_deps": True,
         "installer": installer},
    ]})
    converge(manifest)
    assert installed_version(host, "provdep") == "1.0.0"
    assert installed_by(host, "provdep") == installer


@pytest.fixture
def pytorch_indexes(tmp_path: Path) -> Iterator[dict[str, str]]:
    """download.pytorch.org's layout: /whl/cu130 and /whl/cpu, the same release labelled per build."""
    root = tmp_path / "pytorch"
    for build in ("cu130", "cpu"):
        build_torch_wheels(tmp_path / f"wheels-{build}", build)
        build_torch_wheels(tmp_path / f"wheels-{build}", build, OLDER_TORCH_RELEASE)
        write_simple_index(tmp_path / f"wheels-{build}", root / "whl" / build)
    with serve_directory(root) as base:
        yield {build: f"{base}/whl/{build}/simple" for build in ("cu130", "cpu")}


def test_torch_pins_are_met_by_the_builds_pytorch_labels(host: TargetHost, tmp_path: Path,
                                                         pytorch_indexes: dict[str, str], installer: str) -> None:
    # The catalog pins the public version; the index serves 2.10.0+cu130. PEP 440: that pin is met.
    manifest = _pip_manifest(tmp_path, host, ["torch==2.10.0", "torchvision==0.25.0"], pytorch_indexes["cu130"],
                             installer)
    converge(manifest)
    assert installed_version(host, "torch") == "2.10.0+cu130"
    assert installed_by(host, "torch") == installer

    # A pin with a label takes only that build: the CUDA one is a change, then the CPU build is kept.
    manifest = _pip_manifest(tmp_path, host, ["torch==2.10.0+cpu", "torchvision==0.25.0"], pytorch_indexes["cpu"],
                             installer)
    report = plan(manifest)
    assert pending(report) == {"pip:venv": ["package.torch"]}
    change = report.resources[1]["changes"][0]
    assert (change["old"], change["new"]) == ("2.10.0+cu130", "2.10.0+cpu")
    converge(manifest)
    assert installed_version(host, "torch") == "2.10.0+cpu"


def test_a_release_series_and_bare_companions_install_what_fits_together(
        host: TargetHost, tmp_path: Path, pytorch_indexes: dict[str, str], installer: str) -> None:
    # A torch the catalog does not know: the series is pinned, torchvision is left for pip to match. The
    # newest torchvision (0.25.0) needs torch 2.10.0, so pip must pick the one built for 2.9.
    manifest = _pip_manifest(tmp_path, host, ["torch==2.9.*", "torchvision"], pytorch_indexes["cu130"], installer)
    report = plan(manifest)
    assert [c["new"] for c in report.resources[1]["changes"]] == ["2.9.*", "any version"]
    converge(manifest)
    assert [installed_version(host, name) for name in ("torch", "torchvision")] == ["2.9.1+cu130", "0.24.1+cu130"]

    # Another series is a change of torch; the companion moves with it in the same pip run.
    manifest = _pip_manifest(tmp_path, host, ["torch==2.10.*", "torchvision"], pytorch_indexes["cu130"], installer)
    assert pending(plan(manifest)) == {"pip:venv": ["package.torch"]}
    converge(manifest)
    assert [installed_version(host, name) for name in ("torch", "torchvision")] == ["2.10.0+cu130", "0.25.0+cu130"]


def test_a_package_removed_after_apply_is_drift(host: TargetHost, tmp_path: Path, package_index: str,
                                               installer: str) -> None:
    manifest = _pip_manifest(tmp_path, host, ["provdemo==1.0.0"], package_index, installer)
    converge(manifest)
    host.run([host.path("venv/bin/python"), "-m", "pip", "uninstall", "-q", "-y", "provdemo"])
    report = plan(manifest)
    assert pending(report) == {"pip:venv": ["package.provdemo"]}
    assert statuses(report)["pip:venv"] == "drifted", "it was installed by an earlier apply"
    assert "! drifted pip:venv" in click.unstyle(render_plan(report, Masker([])))
    converge(manifest)
    assert installed_version(host, "provdemo") == "1.0.0"


def test_unrelated_same_named_package_is_removed_and_a_real_build_kept(host: TargetHost, tmp_path: Path,
                                                                       installer: str) -> None:
    wheels = tmp_path / "wheels"
    unrelated = build_unrelated_nunchaku(wheels, "0.16.1")
    real = build_wheel(wheels / "real", "nunchaku", "1.2.1+cu13.0torch2.10", tag="py3-none-any",
                       extra_files={"nunchaku/_C.cpython-312-x86_64-linux-gnu.so": b"\x7fELF stand-in"})
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "name": "nunchaku", "venv": "venv",
         "remove_unrelated": [{"name": "nunchaku", "marker_module": "nunchaku._C",
                               "label": "PyPI's unrelated package"}], "installer": installer},
    ]})
    converge(manifest)
    pip = [host.path("venv/bin/python"), "-m", "pip", "install", "-q", "--no-index"]
    host.run([*pip, str(unrelated)])

    report = plan(manifest)
    assert report.exit_code() == 2
    assert pending(report) == {"pip:venv#nunchaku": ["package.nunchaku"]}
    [change] = report.resources[1]["changes"]
    assert (change["action"], change["old"], change["new"]) == ("remove", "0.16.1", None)
    assert change["reason"] == "nunchaku 0.16.1 (PyPI's unrelated package: no nunchaku._C) will be removed"
    assert "package.nunchaku: remove 0.16.1" in click.unstyle(render_plan(report, Masker([])))
    assert changed(converge(manifest)) == ["pip:venv#nunchaku"]
    assert host.run([host.path("venv/bin/python"), "-c", "import nunchaku"], check=False).returncode != 0

    # A real build (it ships nunchaku._C) is not ours to remove: information only.
    host.run([*pip, str(real)])
    report = plan(manifest)
    assert report.exit_code() == 0
    [note] = report.resources[1]["notes"]
    assert "nunchaku 1.2.1+cu13.0torch2.10" in note and "kept" in note
    assert "note: nunchaku 1.2.1+cu13.0torch2.10" in render_plan(report, Masker([]))
    assert changed(apply(manifest)) == []
    assert installed_version(host, "nunchaku") == "1.2.1+cu13.0torch2.10"


def _git_manifest(tmp_path: Path, host: TargetHost, upstream: UpstreamRepo, ref: str) -> Path:
    return write_manifest(tmp_path, host, {"resources": [
        {"kind": "git", "path": "src/app", "repo": upstream.url, "ref": ref},
    ]})


def _head(host: TargetHost) -> str:
    return host.run(["git", "-C", host.path("src/app"), "rev-parse", "HEAD"]).stdout.strip()


def test_git_checkout_pins_a_tag_and_reports_drift(host: TargetHost, tmp_path: Path, upstream: UpstreamRepo) -> None:
    manifest = _git_manifest(tmp_path, host, upstream, "v1.0.0")
    converge(manifest)
    assert _head(host) == upstream.tags["v1.0.0"]
    assert not host.exists("src/app.provision-tmp")

    # Moved HEAD is drift.
    host.run(["git", "-C", host.path("src/app"), "checkout", "-q", "v1.1.0"])
    report = plan(manifest)
    assert pending(report) == {"git:src/app": ["HEAD"]}
    assert statuses(report)["git:src/app"] == "drifted"
    converge(manifest)
    assert _head(host) == upstream.tags["v1.0.0"]

    # Local modifications and untracked files are drift, refused without --force.
    host.sh(f"echo edited >> {host.path('src/app/app.py')}; echo new > {host.path('src/app/notes.txt')}")
    host.sh(f"mkdir -p {host.path('src/app/cache')} && echo keep > {host.path('src/app/cache/ignored.bin')}")
    report = plan(manifest)
    assert pending(report) == {"git:src/app": ["modified", "untracked"]}
    refused = apply(manifest)
    assert not refused.ok
    assert "--force" in refused.resources[0]["error"]
    assert "edited" in host.read("src/app/app.py"), "nothing is discarded without --force"
    forced = apply(manifest, force=True)
    assert forced.ok
    assert "edited" not in host.read("src/app/app.py")
    assert not host.exists("src/app/notes.txt")
    assert host.read("src/app/cache/ignored.bin") == "keep\n", "ignored files are user data"

    # A new ref in the manifest is a change, fetched from the upstream.
    upstream.commit({"app.py": "print('three')\n"}, "three", tag="v1.2.0")
    manifest = _git_manifest(tmp_path, host, upstream, "v1.2.0")
    report = plan(manifest)
    assert statuses(report)["git:src/app"] == "change"
    converge(manifest)
    assert _head(host) == upstream.tags["v1.2.0"]


def test_deleted_tracked_files_are_restored_without_force(host: TargetHost, tmp_path: Path,
                                                           upstream: UpstreamRepo) -> None:
    upstream.commit({"docs/odd name*.txt": "literal\n", "docs/other.txt": "other\n"}, "docs", tag="v1.2.0")
    manifest = _git_manifest(tmp_path, host, upstream, "v1.2.0")
    converge(manifest)

    # Deleting loses nothing: the content is in HEAD. No --force needed, and only the deleted file returns.
    host.run(["rm", host.path("src/app/app.py"), host.path("src/app/docs/odd name*.txt")])
    report = plan(manifest)
    assert pending(report) == {"git:src/app": ["deleted"]}
    assert statuses(report)["git:src/app"] == "drifted"
    assert "app.py" in report.resources[0]["changes"][0]["reason"]
    assert changed(converge(manifest)) == ["git:src/app"]
    assert host.read("src/app/app.py") == "print('two')\n"
    assert host.read("src/app/docs/odd name*.txt") == "literal\n"

    # An edit beside a deletion is someone's work: still refused without --force.
    host.run(["rm", host.path("src/app/app.py")])
    host.sh(f"echo mine >> {host.path('src/app/README.md')}")
    assert pending(plan(manifest)) == {"git:src/app": ["modified", "deleted"]}
    refused = apply(manifest)
    assert not refused.ok and "--force" in refused.resources[0]["error"]
    assert "mine" in host.read("src/app/README.md")


def test_git_branch_follows_the_remote(host: TargetHost, tmp_path: Path, upstream: UpstreamRepo) -> None:
    manifest = _git_manifest(tmp_path, host, upstream, "main")
    converge(manifest)
    assert _head(host) == git("rev-parse", "HEAD", cwd=upstream.work)
    new = upstream.commit({"app.py": "print('next')\n"}, "next")
    assert pending(plan(manifest)) == {"git:src/app": ["HEAD"]}
    converge(manifest)
    assert _head(host) == new


def test_git_commit_pin_and_unknown_ref(host: TargetHost, tmp_path: Path, upstream: UpstreamRepo) -> None:
    manifest = _git_manifest(tmp_path, host, upstream, upstream.tags["v1.0.0"])
    converge(manifest)
    assert _head(host) == upstream.tags["v1.0.0"]
    bad = _git_manifest(tmp_path, host, upstream, "v9.9.9")
    report = plan(bad)
    assert report.exit_code() == 1
    assert "v9.9.9" in report.resources[0]["error"]


def test_command_runs_only_while_its_guard_fails(host: TargetHost, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "command", "name": "init-db", "argv": ["sh", "-c", "echo run >> runs.log; touch db.ready"],
         "creates": "db.ready"},
        {"kind": "command", "name": "check-flag", "argv": ["sh", "-c", "echo flag > flag; echo ran >> flag.log"],
         "unless": ["test", "-f", "flag"]},
    ]})
    converge(manifest)
    assert host.read("runs.log") == "run\n"
    assert host.read("flag.log") == "ran\n"
    host.run(["rm", host.path("flag")])
    assert pending(plan(manifest)) == {"command:check-flag": ["run"]}
    converge(manifest)
    assert host.read("flag.log") == "ran\nran\n"
    assert host.read("runs.log") == "run\n", "a command whose guard holds never re-runs"


def test_handlers_run_once_and_only_on_change(host: TargetHost, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, host, {
        "resources": [
            {"kind": "file", "path": "a.conf", "content": "a\n", "notify": ["restart"]},
            {"kind": "file", "path": "b.conf", "content": "b\n", "notify": ["restart"]},
            {"kind": "directory", "path": "quiet"},
        ],
        "handlers": {"restart": {"argv": ["sh", "-c", "echo restart >> restarts.log"]}},
    })
    first = apply(manifest)
    assert [h["name"] for h in first.handlers] == ["restart"]
    assert host.read("restarts.log") == "restart\n"
    assert apply(manifest).handlers == []
    host.run(["rm", host.path("quiet"), "-r"])
    assert apply(manifest).handlers == [], "an unrelated change does not notify"
    host.sh(f"echo x >> {host.path('b.conf')}")
    assert [h["name"] for h in apply(manifest).handlers] == ["restart"]
    assert host.read("restarts.log") == "restart\nrestart\n"


def test_generations_record_each_changing_apply(host: TargetHost, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, host, {"resources": [{"kind": "file", "path": "x", "content": "1\n"}]})
    assert apply(manifest).generation == 1
    assert apply(manifest).generation is None
    host.sh(f"echo 2 > {host.path('x')}")
    assert apply(manifest).generation == 2
    record = json.loads(host.read(".provision/generations/000002.json"))
    assert record["status"] == "ok"
    assert record["manifest"]["name"] == "test"
    assert [c["id"] for c in record["changes"]] == ["file:x"]
    assert record["converged"] == {"file:x": record["resources"][0]["digest"]}


def test_failed_resource_stops_the_run_and_later_ones_are_skipped(host: TargetHost, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "command", "name": "boom", "argv": ["sh", "-c", "echo bad >&2; exit 3"], "creates": "never"},
        {"kind": "file", "path": "after.txt", "content": "x\n"},
    ]})
    report = apply(manifest)
    assert not report.ok and report.exit_code() == 1
    outcomes = {r["id"]: r["outcome"] for r in report.resources}
    assert outcomes == {"command:boom": "failed", "file:after.txt": "skipped"}
    assert "exit 3" in report.resources[0]["error"] and "bad" in report.resources[0]["error"]
    assert not host.exists("after.txt")


def test_a_failure_skips_only_the_resources_that_need_it(host: TargetHost, tmp_path: Path) -> None:
    missing = (tmp_path / "no-such-repo.git").as_uri()
    dead = "http://127.0.0.1:9/model.bin"  # the discard port: nothing listens, the download fails at apply
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "git", "path": "app", "repo": missing, "ref": "v1.0.0"},
        {"kind": "file", "path": "app/settings.conf", "content": "inside the checkout\n"},
        {"kind": "download", "path": "models/model.bin", "url": dead},
        {"kind": "pip", "venv": "venv", "packages": ["provdep==1.0.0"], "find_links": ["models"]},
        {"kind": "file", "path": "etc/unrelated.conf", "content": "independent\n"},
        {"kind": "directory", "path": "data"},
    ]})
    report = apply(manifest)
    assert report.exit_code() == 1
    outcomes = {r["id"]: (r["outcome"], r.get("after")) for r in report.resources}
    assert outcomes == {
        "git:app": ("failed", None),
        "file:app/settings.conf": ("skipped", "git:app"),
        "download:models/model.bin": ("failed", None),
        "pip:venv": ("skipped", "download:models/model.bin"),
        "file:etc/unrelated.conf": ("changed", None),
        "directory:data": ("changed", None),
    }
    assert host.read("etc/unrelated.conf") == "independent\n"
    assert not host.exists("app/settings.conf")
    assert report.as_json()["failures"] == ["git:app", "download:models/model.bin"]
    text = render_apply(report, Masker([]))
    assert "Failed: git:app, download:models/model.bin" in text
    assert "not applied: it needs git:app, which did not converge" in text

    # The next apply finds the independent parts done and fails the same way, changing nothing else.
    again = apply(manifest)
    assert again.exit_code() == 1
    assert {r["id"] for r in again.resources if r["outcome"] == "changed"} == set()


def _service_manifest(tmp_path: Path, host: TargetHost, config: str, extra: list[dict[str, object]]) -> Path:
    return write_manifest(tmp_path, host, {
        "resources": [
            {"kind": "file", "path": "app/idle.py", "content": "import time\ntime.sleep(600)\n"},
            {"kind": "file", "path": "app/app.conf", "content": config, "notify": ["restart-app"]},
            {"kind": "file", "path": "etc/hook.conf", "content": config, "notify": ["hook"]},
            *extra,
            {"kind": "service", "name": "app", "manager": "process", "argv": ["python3", "app/idle.py"],
             "settle_seconds": 0.2},
        ],
        "handlers": {"restart-app": {"restart": "app"},
                     "hook": {"argv": ["sh", "-c", "echo hook >> hooks.log"]}},
    })


def test_a_restart_still_runs_when_its_service_needs_nothing_that_failed(host: TargetHost, tmp_path: Path) -> None:
    def pid() -> int:
        return int(json.loads(host.read(".provision/services/app.json"))["pid"])

    manifest = _service_manifest(tmp_path, host, "one\n", [])
    try:
        converge(manifest)
        first = pid()
        failing = [{"kind": "download", "path": "models/model.bin", "url": "http://127.0.0.1:9/model.bin"}]
        report = apply(_service_manifest(tmp_path, host, "two\n", failing))
        assert report.exit_code() == 1 and report.failures == ["download:models/model.bin"]
        assert sorted(changed(report)) == ["file:app/app.conf", "file:etc/hook.conf"]
        # ComfyUI does not wait for a model to pick up its new plugin; a command handler may need anything.
        assert [(h["name"], h.get("error")) for h in report.handlers] == [("restart-app", None)]
        assert pid() != first
        assert host.read("hooks.log") == "hook\n", "the hook ran once, on the first apply only"
    finally:
        if host.exists(".provision/services/app.json"):
            host.run(["kill", str(pid())], check=False)


def test_symlink_out_of_the_root_is_refused(host: TargetHost, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    host.run(["mkdir", "-p", host.root])
    host.run(["ln", "-s", str(outside), host.path("escape")])
    manifest = write_manifest(tmp_path, host, {"resources": [{"kind": "file", "path": "escape/x", "content": "x"}]})
    report = apply(manifest)
    assert not report.ok
    assert "outside the target root" in report.resources[0]["error"]
    assert not (outside / "x").exists()
