"""The Docker transport against a real daemon: clear errors with their fix, streaming, files, image builds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.errors import TransportError
from provisioner.manifest.model import Target
from provisioner.transport.docker import BUILD_LABEL, DockerTransport, open_docker
from tests.support.dockerd import BASE_IMAGE, DockerSession, docker, docker_session, remove_container, start_container

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
    # Any test here may be the one that builds the base image (debootstrap alone is allowed 900 s, see
    # tests/support/dockerd.py) or waits for another worker's build or image-build turn: pytest's default
    # 300 s would cut it off first, with no word about why.
    pytest.mark.timeout(1200),
]


@pytest.fixture
def session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DockerSession:
    return docker_session(request.config, tmp_path_factory.getbasetemp())


@pytest.fixture
def container(session: DockerSession) -> Iterator[str]:
    name = start_container(session, network="none")
    yield name
    remove_container(session, name)


def provision(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, check=False)


def write(directory: Path, target: dict[str, Any], resources: list[dict[str, Any]] | None = None) -> Path:
    path = directory / f"manifest-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"name": "docker-test", "target": target, "resources": resources or []}))
    return path


def assert_clean_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def build_containers() -> set[str]:
    listed = docker("ps", "-a", "--filter", f"label={BUILD_LABEL}=true", "--format", "{{.Names}}")
    return set(listed.stdout.split())


def test_dead_daemon_names_the_fix(tmp_path: Path) -> None:
    dead = f"unix://{tmp_path}/nobody-listens.sock"
    manifest = write(tmp_path, {"connection": "docker://anything", "root": "/srv"})
    done = provision("plan", str(manifest), env={"DOCKER_HOST": dead})
    assert_clean_error(done, "cannot reach the Docker daemon", dead, "DOCKER_HOST")


def test_missing_container_names_the_fix(session: DockerSession, tmp_path: Path) -> None:
    name = f"provision-test-absent-{uuid.uuid4().hex[:6]}"
    done = provision("facts", f"docker://{name}")
    assert_clean_error(done, f"no container named {name!r}", f"docker run -d --name {name}")


def test_stopped_container_names_docker_start(session: DockerSession, container: str, tmp_path: Path) -> None:
    docker("kill", container)
    manifest = write(tmp_path, {"connection": f"docker://{container}", "root": "/srv"})
    done = provision("plan", str(manifest))
    assert_clean_error(done, f"container {container!r} is exited", f"docker start {container}")


def test_missing_interpreter_is_a_clear_error(container: str, tmp_path: Path) -> None:
    manifest = write(tmp_path, {"connection": f"docker://{container}", "root": "/srv", "python": "/usr/bin/python9"})
    done = provision("plan", str(manifest))
    assert_clean_error(done, "'/usr/bin/python9' was not found", "target.python")


def test_run_streams_lines_and_keeps_env_values_out_of_argv(container: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    transport = open_docker(Target(connection=f"docker://{container}"))
    assert isinstance(transport, DockerTransport)
    launched: list[list[str]] = []
    real_popen = subprocess.Popen

    def recording_popen(args: list[str], **kwargs: Any) -> Any:
        launched.append(list(args))
        return real_popen(args, **kwargs)

    monkeypatch.setattr("provisioner.transport.docker.subprocess.Popen", recording_popen)
    # The program only prints its second line once the first has reached the controller, which
    # answers by creating a file: without streaming it gives up (bounded, ~60 s: a loaded machine's
    # `docker exec` for the ack can take seconds) and says so, before the run's own timeout.
    script = ("echo first; i=0; while [ ! -e /tmp/ack ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; "
              "[ -e /tmp/ack ] && echo streamed || echo not-streamed; echo \"token=$PROVISION_TEST_TOKEN\"; "
              "head -c 5; echo; echo oops >&2; exit 3")
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "first":
            docker("exec", container, "touch", "/tmp/ack")

    result = transport.run(["sh", "-c", script], stdin=b"hello world", env={"PROVISION_TEST_TOKEN": "s3cret-v"},
                           timeout=120, on_stdout_line=on_line)
    assert seen == ["first", "streamed", "token=s3cret-v", "hello"]
    assert (result.returncode, result.stderr.strip()) == (3, "oops")
    assert launched and all("s3cret-v" not in arg for argv in launched for arg in argv)
    transport.close()


def test_put_and_get_roundtrip(container: str, tmp_path: Path) -> None:
    transport = open_docker(Target(connection=f"docker://{container}"))
    source = tmp_path / "payload.bin"
    source.write_bytes(bytes(range(256)) * 64)
    transport.put(source, "/srv/deep/dir/payload.bin", mode=0o640)
    assert docker("exec", container, "stat", "-c", "%a %s", "/srv/deep/dir/payload.bin").stdout.split() == [
        "640", str(256 * 64)]
    back = tmp_path / "back.bin"
    transport.get("/srv/deep/dir/payload.bin", back)
    assert back.read_bytes() == source.read_bytes()
    with pytest.raises(TransportError, match="does not exist"):
        transport.get("/srv/nothing-here", tmp_path / "none")
    with pytest.raises(TransportError, match="not a regular file"):
        transport.get("/srv/deep", tmp_path / "dir")


def test_image_target_needs_commit_tag_and_an_existing_image(session: DockerSession, tmp_path: Path) -> None:
    untagged = write(tmp_path, {"connection": f"docker-image://{BASE_IMAGE}", "root": "/opt/app"})
    assert_clean_error(provision("plan", str(untagged)), "needs target.commit_tag")
    absent = f"provision-test-absent:{uuid.uuid4().hex[:6]}"
    missing = write(tmp_path, {"connection": f"docker-image://{absent}", "root": "/opt/app",
                               "commit_tag": "provision-test-never:latest"})
    assert_clean_error(provision("plan", str(missing)), f"image {absent!r} is not present", f"docker pull {absent}")


@pytest.fixture
def image_tags() -> Iterator[list[str]]:
    tags: list[str] = []
    yield tags
    for tag in tags:
        docker("rmi", "-f", tag, check=False)


@pytest.mark.usefixtures("image_build_turn")
def test_image_build_commits_a_converged_image(session: DockerSession, tmp_path: Path,
                                               image_tags: list[str]) -> None:
    suffix = uuid.uuid4().hex[:8]
    first_tag, second_tag = f"provision-test-built:{suffix}", f"provision-test-built:{suffix}-again"
    image_tags.extend([first_tag, second_tag])
    resources = [
        {"kind": "directory", "path": "data", "mode": "0750"},
        {"kind": "file", "path": "etc/app.conf", "content": "port = 8188\n", "mode": "0644"},
    ]
    before = build_containers()

    built = write(tmp_path, {"connection": f"docker-image://{BASE_IMAGE}", "root": "/opt/app",
                             "commit_tag": first_tag}, resources)
    done = provision("apply", str(built))
    assert done.returncode == 0, done.stdout + done.stderr
    shown = docker("run", "--rm", "--network", "none", first_tag, "cat", "/opt/app/etc/app.conf")
    assert shown.stdout == "port = 8188\n"
    config = docker("image", "inspect", "--format", "{{json .Config.Cmd}} {{index .Config.Labels \"" + BUILD_LABEL
                    + "\"}}", first_tag).stdout.split()
    assert config == ["null", "false"], "the keep-alive command and the build label do not leak into the image"

    again = write(tmp_path, {"connection": f"docker-image://{first_tag}", "root": "/opt/app",
                             "commit_tag": second_tag}, resources)
    done = provision("apply", "--json", str(again))
    assert done.returncode == 0, done.stdout + done.stderr
    assert yaml.safe_load(done.stdout)["summary"] == {"changed": 0, "destroyed": 0, "ok": 2, "failed": 0,
                                                       "skipped": 0}
    assert docker("image", "inspect", second_tag, check=False).returncode == 0

    assert build_containers() <= before, "temporary build containers are removed"


@pytest.mark.usefixtures("image_build_turn")
def test_failed_image_build_commits_nothing(session: DockerSession, tmp_path: Path, image_tags: list[str]) -> None:
    tag = f"provision-test-built:{uuid.uuid4().hex[:8]}-failed"
    image_tags.append(tag)
    before = build_containers()
    failing = write(tmp_path, {"connection": f"docker-image://{BASE_IMAGE}", "root": "/opt/app", "commit_tag": tag},
                    [{"kind": "command", "name": "fails", "argv": ["false"], "creates": "never"}])
    done = provision("apply", str(failing))
    assert done.returncode == 1, done.stdout + done.stderr
    assert docker("image", "inspect", tag, check=False).returncode != 0
    assert build_containers() <= before
