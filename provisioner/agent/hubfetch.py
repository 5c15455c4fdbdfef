"""A Hub file fetched by huggingface_hub in the target venv, the way `hf download` would on this host.

The agent stays stdlib-only: it runs a small program with the venv's python that calls
`hf_hub_download(repo, file, revision=..., local_dir=<staging folder beside the file>)`. huggingface_hub
then picks its transfer backend (Xet where hf_xet is installed; hf_transfer on releases before 1.0 that
still use it, when it is importable), reads `HF_TOKEN` or the host's token file, and resumes its own
partial file in the staging folder after a drop. The controller's token reaches the program in its
environment, never in its argv. The endpoint (`HF_ENDPOINT`) is the one the resource's URL points to,
which is where the mirrors file's `huggingface.endpoint` sent it.

Outcomes: the staged file, or None when huggingface_hub cannot be used here (no venv yet, not
installed, too old, an error it could not get past), and the caller falls back to its own HTTP client;
an answer the Hub gave about the file itself (no access, not found) is a ResourceFailure.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

from .fsutil import human_size
from .protocol import Context, ResourceFailure, emit, log

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

#: local_dir without symlinks into the cache, and its resumable `.cache/huggingface/download` folder.
MIN_VERSION = (0, 23)
PROGRESS_EVERY_SECONDS = 2.0

# Runs in the venv. Values arrive as JSON in argv[1] (no secret among them); the token, in HF_TOKEN.
PROGRAM = r"""
import importlib.util, json, os, sys
request = json.loads(sys.argv[1])
def answer(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.exit(0)
try:
    from importlib.metadata import version as _version
    version = _version("huggingface_hub")
except Exception:
    answer(outcome="absent")
numbers = []
for part in version.split(".")[:2]:
    digits = "".join(c for c in part if c.isdigit())
    numbers.append(int(digits or 0))
if tuple(numbers) < tuple(request["min_version"]):
    answer(outcome="too_old", version=version)
backend = "http"
if numbers[0] < 1 and importlib.util.find_spec("hf_transfer") is not None:
    os.environ["HF_HUB_ENABLE_HF_TRANSFER"] = "1"
    backend = "hf_transfer"
if importlib.util.find_spec("hf_xet") is not None and tuple(numbers) >= (0, 30):
    backend = "xet when the Hub serves the file through Xet, else http"
try:
    from huggingface_hub import hf_hub_download
    path = hf_hub_download(request["repo"], request["file"], revision=request["revision"],
                           local_dir=request["local_dir"])
except Exception as exc:
    response = getattr(exc, "response", None)
    answer(outcome="error", kind=type(exc).__name__, status=getattr(response, "status_code", None),
           message=str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__,
           version=version)
answer(outcome="ok", path=path, version=version, backend=backend)
"""

_NO_ACCESS = ("GatedRepoError", "RepositoryNotFoundError")
_MISSING = ("EntryNotFoundError", "RemoteEntryNotFoundError", "RevisionNotFoundError")


def interpreter(hub: Dict[str, Any], ctx: Context) -> Optional[str]:
    python = hub.get("python")
    if not python:
        return None
    path = python if python.startswith("/") else ctx.program_path(python)
    return path if os.access(path, os.X_OK) else None


def endpoint_of(spec: Dict[str, Any]) -> Optional[str]:
    """The Hub endpoint the resource's URL is under, when the URL has the Hub's file layout."""
    from urllib.parse import quote

    hub = spec["hub"]
    url = str(spec["url"]).split("?", 1)[0]
    for revision, name in ((hub["revision"], hub["file"]), (quote(hub["revision"], safe=""), quote(hub["file"]))):
        suffix = "/%s/resolve/%s/%s" % (hub["repo"], revision, name)
        if url.endswith(suffix) and url.startswith(("http://", "https://")):
            return url[: -len(suffix)]
    return None


def fetch(spec: Dict[str, Any], python: str, endpoint: str, staging: str) -> Optional[str]:
    """Run hf_hub_download into `staging`; the downloaded file's path, or None to fall back."""
    hub = spec["hub"]
    request = {"repo": hub["repo"], "file": hub["file"], "revision": hub["revision"], "local_dir": staging,
               "min_version": list(MIN_VERSION)}
    env = dict(os.environ)
    env["HF_ENDPOINT"] = endpoint
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # the agent reports progress itself, as JSON events
    if spec.get("token"):
        env["HF_TOKEN"] = spec["token"]
    os.makedirs(staging, exist_ok=True)
    answer: Dict[str, Any] = _run([python, "-I", "-c", PROGRAM, json.dumps(request)], env, staging, spec)
    outcome = answer.get("outcome")
    if outcome == "ok":
        return _staged_file(answer, staging, spec)
    if outcome == "absent":
        return None  # the usual case before the venv has its packages: quietly the agent's own client
    if outcome == "too_old":
        log("%s: huggingface_hub %s in the venv is older than %s; downloading with the agent's own client"
            % (spec["path"], answer.get("version"), ".".join(map(str, MIN_VERSION))))
        return None
    kind, status, message = answer.get("kind"), answer.get("status"), answer.get("message") or ""
    if kind in _NO_ACCESS or status in (401, 403):
        raise ResourceFailure("%s: the Hub refused %s (%s: %s); set the HF_TOKEN secret to a token that can read "
                              "the repo (and accept its terms on the Hub if it is gated)"
                              % (spec["path"], hub["repo"], kind, message))
    if kind in _MISSING or status == 404:
        raise ResourceFailure("%s: %s has no %s at revision %s (%s); check the repo, file and revision"
                              % (spec["path"], hub["repo"], hub["file"], hub["revision"], kind))
    log("%s: huggingface_hub could not download it (%s: %s); trying the agent's own client"
        % (spec["path"], kind or "no answer", message))
    return None


def _run(argv: List[str], env: Dict[str, str], staging: str, spec: Dict[str, Any]) -> Dict[str, Any]:
    """The program's JSON answer, with progress events from the bytes in the staging folder meanwhile."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=env, cwd=staging, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            while True:
                try:
                    proc.wait(timeout=PROGRESS_EVERY_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    emit("progress", id="download:" + spec["path"], phase="bytes", done=staged_bytes(staging),
                         total=spec.get("size"))
        except BaseException:
            proc.kill()  # the run is stopping (controller gone, interrupt): nothing keeps writing
            proc.wait()
            raise
        out.seek(0)
        err.seek(0)
        lines = out.read().decode("utf-8", "replace").strip().splitlines()
        stderr = err.read().decode("utf-8", "replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        answer = {"outcome": "error", "kind": "exit status %d" % proc.returncode,
                  "message": stderr[-1] if stderr else "no output"}
    return answer if isinstance(answer, dict) else {"outcome": "error", "kind": "unreadable answer"}


def _staged_file(answer: Dict[str, Any], staging: str, spec: Dict[str, Any]) -> Optional[str]:
    path = os.path.realpath(str(answer.get("path")))
    inside = os.path.realpath(staging) + os.sep
    if not path.startswith(inside) or os.path.islink(str(answer.get("path"))) or not os.path.isfile(path):
        log("%s: huggingface_hub put the file at %s, not as a plain file in %s; using the agent's own client"
            % (spec["path"], answer.get("path"), staging))
        return None
    log("%s: downloaded by huggingface_hub %s (%s, %s)" % (spec["path"], answer.get("version"),
                                                           answer.get("backend"), human_size(os.path.getsize(path))))
    return path


def staged_bytes(staging: str) -> int:
    """Bytes huggingface_hub has written so far under the staging folder (its .incomplete file and the result)."""
    total = 0
    for folder, _, files in os.walk(staging):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total
