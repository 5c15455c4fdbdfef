"""Docker containers through the docker CLI: `docker exec` runs, `docker cp` moves files.

`docker://CONTAINER` provisions a running container. `docker-image://IMAGE` is a declarative image
build: a temporary container is started from IMAGE, provisioned, committed as `target.commit_tag` when
the apply succeeds, and always removed on close.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner.errors import TransportError
from provisioner.manifest.model import Target
from provisioner.transport.base import LineCallback, RunResult, Transport
from provisioner.transport.inactivity import inactivity_error
from provisioner.transport.stream import stream

if TYPE_CHECKING:
    from provisioner.transport import ConnectOptions

# Labels the temporary build containers carry, so a crashed run's leftovers can be found and removed
# (`docker ps -a --filter label=provision.build-container=true`).
BUILD_LABEL = "provision.build-container"

# A reference starting with '-' would be read by the docker CLI as an option: accept plain references only.
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")

_NOT_FOUND = re.compile(r"executable file not found|no such file or directory")
_DAEMON_DOWN = ("Cannot connect to the Docker daemon", "Is the docker daemon running", "error during connect")


class DockerCli:
    """The `docker` program, with its failures turned into messages that say what to do."""

    def __init__(self, display: str, timeout: float) -> None:
        executable = shutil.which("docker")
        if executable is None:
            raise TransportError(
                f"{display}: the docker CLI was not found on PATH; install Docker "
                "(e.g. `apt-get install docker.io`) or add the `docker` program to PATH"
            )
        self.executable = executable
        self.display = display
        self.timeout = timeout

    def call(self, args: Sequence[str], *, timeout: float | None = None, check: bool = True,
             ) -> subprocess.CompletedProcess[bytes]:
        """Run one docker subcommand to completion; raise on daemon trouble (and on failure if `check`)."""
        limit = timeout or self.timeout
        try:
            done = subprocess.run([self.executable, *args], capture_output=True, stdin=subprocess.DEVNULL,
                                  timeout=limit)
        except subprocess.TimeoutExpired:
            raise TransportError(
                f"{self.display}: `docker {args[0]}` got no answer within {limit:g}s; "
                f"check that the Docker daemon{_daemon_address()} is running and responsive"
            ) from None
        stderr = done.stderr.decode("utf-8", "replace").strip()
        if done.returncode != 0:
            self.raise_for_daemon(stderr)
            if check:
                raise TransportError(f"{self.display}: `docker {args[0]}` failed: {stderr or done.returncode}")
        return done

    def raise_for_daemon(self, stderr: str) -> None:
        """Raise a TransportError when `stderr` says the daemon itself could not be reached."""
        if any(marker in stderr for marker in _DAEMON_DOWN):
            raise TransportError(
                f"{self.display}: cannot reach the Docker daemon{_daemon_address()}; start it "
                "(`systemctl start docker`, or `dockerd` as root) or point DOCKER_HOST / `docker context` "
                "at a running one"
            )
        if "permission denied" in stderr and "docker" in stderr and ".sock" in stderr:
            raise TransportError(
                f"{self.display}: no permission to use the Docker daemon socket; run as root or add "
                "your user to the `docker` group (then log in again)"
            )

    def inspect_json(self, kind: str, name: str) -> dict[str, object] | None:
        """`docker KIND inspect NAME` as a dict, or None when there is no such object."""
        done = self.call([kind, "inspect", "--", name], check=False)
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", "replace")
            if "No such" in stderr or "not found" in stderr:
                return None
            raise TransportError(f"{self.display}: `docker {kind} inspect {name}` failed: {stderr.strip()}")
        found = json.loads(done.stdout)
        return found[0] if found else None


def _daemon_address() -> str:
    host = os.environ.get("DOCKER_HOST")
    return f" at {host}" if host else ""


def open_docker(target: Target, options: ConnectOptions | None = None) -> Transport:
    """A transport for `docker://CONTAINER` or `docker-image://IMAGE` (which needs `commit_tag`)."""
    scheme, _, name = target.connection.partition("://")
    display = target.connection
    if not _REFERENCE.match(name):
        raise TransportError(f"{display}: {name!r} is not a container name or image reference")
    if scheme == "docker-image":
        if not target.commit_tag:
            raise TransportError(
                f"{display}: a docker-image:// target builds an image, so it needs target.commit_tag "
                "(the tag to commit the provisioned container as, e.g. `commit_tag: myapp:latest`)"
            )
        if not _REFERENCE.match(target.commit_tag):
            raise TransportError(f"{display}: target.commit_tag {target.commit_tag!r} is not an image tag")
    cli = DockerCli(display, target.connect_timeout)
    if scheme == "docker":
        _require_running(cli, name)
        return DockerTransport(cli, name, display, target.command_timeout)
    return _start_build(cli, name, target.commit_tag or "", target.command_timeout)


def _require_running(cli: DockerCli, container: str) -> None:
    info = cli.inspect_json("container", container)
    if info is None:
        raise TransportError(
            f"{cli.display}: there is no container named {container!r}; start one "
            f"(`docker run -d --name {container} IMAGE sleep infinity`) or fix target.connection "
            "(`docker ps -a` lists the containers)"
        )
    state = info.get("State")
    status = state.get("Status", "unknown") if isinstance(state, dict) else "unknown"
    if status == "running":
        return
    fix = f"docker unpause {container}" if status == "paused" else f"docker start {container}"
    raise TransportError(f"{cli.display}: container {container!r} is {status}, not running; start it with `{fix}`")


def _start_build(cli: DockerCli, image: str, commit_tag: str, timeout: float) -> ImageBuildTransport:
    info = cli.inspect_json("image", image)
    if info is None:
        raise TransportError(
            f"{cli.display}: image {image!r} is not present on the Docker daemon{_daemon_address()}; "
            f"pull it (`docker pull {image}`) or build it first"
        )
    config = info.get("Config")
    config = config if isinstance(config, dict) else {}
    container = f"provision-build-{uuid.uuid4().hex[:12]}"
    # `cat` on an open, never-written stdin keeps the container alive with no arguments: `--entrypoint`
    # clears the image's Cmd, so the container has no keep-alive Cmd that the commit could inherit.
    # Host networking: a build downloads packages like `docker build` does, and reaches mirrors the
    # controller serves on loopback.
    try:
        cli.call(["run", "-d", "-i", "--name", container, "--network", "host", "--label", f"{BUILD_LABEL}=true",
                  "--entrypoint", "cat", "--", image], timeout=timeout)
    except TransportError:
        # A container that was created but could not start still exists.
        cli.call(["rm", "-f", "--", container], check=False)
        raise
    return ImageBuildTransport(cli, container, cli.display, timeout, commit_tag,
                               config.get("Entrypoint"), config.get("Cmd"))


class DockerTransport(Transport):
    """A running container, reached with `docker exec` (argv lists only) and `docker cp`."""

    def __init__(self, cli: DockerCli, container: str, display: str, timeout: float) -> None:
        self.cli = cli
        self.container = container
        self.display = display
        self.timeout = timeout

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_stdout_line: LineCallback | None = None,
        idle_timeout: float | None = None,
    ) -> RunResult:
        # `-e NAME` without a value makes the docker CLI copy NAME from its own environment, so values
        # (secrets included) never appear in any argv on the controller.
        names = [arg for key in (env or {}) for arg in ("-e", key)]
        client_env = {**os.environ, **(env or {})}
        command = [self.cli.executable, "exec", "-i", *names, self.container, *argv]
        done = stream(command, stdin or b"", client_env, timeout=timeout, on_line=on_stdout_line,
                      idle_timeout=idle_timeout)
        returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
        if done.stopped == "idle":
            # The agent in the container stops itself at its next heartbeat, which nobody reads now.
            raise inactivity_error(self.display, argv[0], idle_timeout or 0)
        if done.stopped == "timeout":
            # Killing the client does not stop the process inside the container; say so.
            raise TransportError(
                f"{self.display}: {argv[0]} timed out after {timeout:g}s (it may still be running in "
                f"the container; `docker restart {self.container}` stops it)"
            )
        if returncode != 0:
            self._raise_for_exec(stderr)
            # The runtime reports a program it cannot start on stdout (newer CLIs) or stderr.
            failure = next((text.strip() for text in (stdout, stderr) if "OCI runtime exec failed" in text), None)
            if returncode in (126, 127) and failure is not None:
                stdout, stderr = "", failure
                if _NOT_FOUND.search(failure):
                    # Same convention as a shell: 127 means the program is not there.
                    returncode = 127
        return RunResult(returncode, stdout, stderr)

    def _raise_for_exec(self, stderr: str) -> None:
        """Failures of `docker exec` itself (not of the program it ran) become TransportErrors."""
        first = stderr.strip().splitlines()[0] if stderr.strip() else ""
        self.cli.raise_for_daemon(first)
        if first.startswith(("Error response from daemon:", "Error: No such container")):
            if "is not running" in first or "is paused" in first:
                raise TransportError(
                    f"{self.display}: container {self.container!r} stopped; start it with "
                    f"`docker start {self.container}`"
                )
            if "No such container" in first:
                raise TransportError(f"{self.display}: container {self.container!r} no longer exists")
            raise TransportError(f"{self.display}: {first}")

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        self._exec_checked(["mkdir", "-p", "--", os.path.dirname(remote) or "/"])
        # The docker CLI streams the file to the daemon as a tar archive: nothing is held in memory here.
        self.cli.call(["cp", "--", str(local), f"{self.container}:{remote}"], timeout=self.timeout)
        if mode is not None:
            self._exec_checked(["chmod", f"{mode:o}", "--", remote])

    def get(self, remote: str, local: Path) -> None:
        # `docker cp` to stdout gives a tar stream: unpack the one file into exactly `local`.
        done = self.cli.call(["cp", "-L", "--", f"{self.container}:{remote}", "-"], timeout=self.timeout,
                             check=False)
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", "replace").strip()
            if "Could not find the file" in stderr or "No such" in stderr:
                raise TransportError(f"{self.display}: {remote} does not exist")
            raise TransportError(f"{self.display}: cannot copy {remote}: {stderr}")
        with tarfile.open(fileobj=io.BytesIO(done.stdout), mode="r:") as archive:
            member = archive.next()
            source = archive.extractfile(member) if member is not None and member.isfile() else None
            if source is None:
                raise TransportError(f"{self.display}: {remote} is not a regular file")
            local.write_bytes(source.read())

    def _exec_checked(self, argv: list[str]) -> None:
        result = self.run(argv, timeout=self.cli.timeout)
        if not result.ok:
            raise TransportError(f"{self.display}: {' '.join(argv)} failed: {result.stderr.strip()}")


class ImageBuildTransport(DockerTransport):
    """A temporary container from an image: committed as `commit_tag` on success, removed on close."""

    def __init__(self, cli: DockerCli, container: str, display: str, timeout: float, commit_tag: str,
                 entrypoint: object, cmd: object) -> None:
        super().__init__(cli, container, display, timeout)
        self.commit_tag = commit_tag
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.committed: str | None = None
        self._closed = False

    def finalize(self, succeeded: bool) -> None:
        if not succeeded or self._closed:
            return
        # The container runs `cat` as its entrypoint; put the image's own back. `[""]` is how a commit
        # says "no entrypoint": an empty list would be replaced by the container's.
        changes = ["--change", f"ENTRYPOINT {json.dumps(self.entrypoint or [''])}",
                   "--change", f"LABEL {BUILD_LABEL}=false"]
        if self.cmd:
            changes += ["--change", f"CMD {json.dumps(self.cmd)}"]
        done = self.cli.call(["commit", *changes, "--", self.container, self.commit_tag], timeout=self.timeout)
        self.committed = done.stdout.decode("utf-8", "replace").strip()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.cli.call(["rm", "-f", "--", self.container], timeout=self.timeout, check=False)

