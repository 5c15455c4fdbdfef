"""A wheel compiled on the host from a git tag with submodules (nunchaku where no prebuilt wheel fits).

Apply: preflight (every missing prerequisite at once) -> the source staged in `workdir` (build_source) ->
`pip wheel --no-build-isolation --no-deps` in-tree, so build/ keeps the compiled objects and ninja resumes
after a kill -> the wheel, written into a temp folder beside `path`, renamed into place once whole ->
recorded with the spec's build_key. A killed build never leaves a wheel at `path`.

The wheel is ok when it is at `path`, recorded with this build_key and its sha256 is the recorded one
(through the stat cache: no re-hash on a no-op probe; `--deep` re-hashes). A wheel the controller pushed
from its cache for the same key (`staged`) is placed instead of building.
"""

from __future__ import annotations

import json
import os
import re
import time

from .. import build_preflight, build_source, leftovers, procs, staging
from ..fsutil import atomic_write, remove_tree, sha256_file
from ..protocol import Change, Context, ResourceFailure, emit, log
from ..statcache import StatCache

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

RECORDS = "wheel_builds.json"
PROGRESS_EVERY_SECONDS = 2.0
_DETECTED = re.compile(r"Detected SM targets: \[(.*)\]")
_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")
_ERROR_LINE = re.compile(r"^\s*[A-Za-z_.]*(Error|Exception)\b.*:|: (fatal )?error:|^FAILED: |^ninja: build stopped")


def _records(ctx: Context) -> Dict[str, Any]:
    from ..statedir import read_text

    try:
        data = json.loads(read_text(ctx.state_path(RECORDS)) or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _record(ctx: Context, path: str, entry: Optional[Dict[str, Any]]) -> None:
    data = _records(ctx)
    if entry is None:
        data.pop(path, None)
    else:
        data[path] = entry
    os.makedirs(ctx.state_dir(), exist_ok=True)
    atomic_write(ctx.state_path(RECORDS), json.dumps(data, sort_keys=True).encode("utf-8"), 0o600)


def interpreter(spec: Dict[str, Any], ctx: Context) -> str:
    python = spec["python"]
    return python if python.startswith("/") else ctx.program_path(python)


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    path = ctx.path(spec["path"])
    workdir = ctx.owned_path(spec["workdir"])
    observed: Dict[str, Any] = {"exists": os.path.isfile(path), "objects": _objects(workdir)}
    if not observed["exists"]:
        return observed
    record = _records(ctx).get(path) or {}
    st = os.stat(path)
    cache = StatCache(ctx)
    sha = None if ctx.deep else cache.lookup(path, st)
    if sha is None:
        sha = sha256_file(path)
        cache.record(path, st, sha)
    observed.update(sha256=sha, recorded_key=record.get("build_key"), recorded_sha256=record.get("sha256"))
    return observed


def _objects(workdir: str) -> int:
    """Compiled objects a resumed build keeps (in the workdir's build/)."""
    count = 0
    for _, _, names in os.walk(os.path.join(workdir, "build")):
        count += sum(1 for name in names if name.endswith(".o"))
    return count


def arches_label(spec: Dict[str, Any]) -> str:
    if spec.get("expect_arches"):
        return ", ".join("sm_" + sm for sm in spec["expect_arches"])
    mode = (spec.get("env") or {}).get("NUNCHAKU_INSTALL_MODE") or "FAST"
    return "all official arches" if mode == "ALL" else "the host's GPU"


def override_warning(spec: Dict[str, Any]) -> str:
    added = spec.get("add_supported_arches") or []
    if not added:
        return ""
    return ("UNSUPPORTED-ARCH OVERRIDE, for diagnostics only: %s added to setup.py's supported list; %s does "
            "not support it" % (", ".join("sm_" + sm for sm in added), spec["project"]))


def plan_line(spec: Dict[str, Any], objects: int = 0) -> str:
    line = "build %s %s from source (%s, MAX_JOBS=%d)" % (
        spec["project"], spec["ref"], arches_label(spec), build_preflight.max_jobs(spec))
    if objects:
        line += ", resuming with %d compiled objects" % objects
    warning = override_warning(spec)
    return line + (" -- " + warning if warning else "")


def notes(spec: Dict[str, Any], observed: Dict[str, Any]) -> List[str]:
    warning = override_warning(spec)
    return [warning] if warning else []


def diff(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> List[Change]:
    label = os.path.basename(spec["path"])
    if not observed["exists"]:
        return [Change("wheel", None, label, plan_line(spec, observed["objects"]), "create")]
    key = spec["build_key"]
    if observed["recorded_key"] is None:
        reason = "%s was not built here for this build (no record of it); %s" % (label, plan_line(spec))
        return [Change("build_key", None, key[:12], reason)]
    if observed["recorded_key"] != key:
        reason = "%s was built for another build (key %s, want %s); %s" % (
            label, observed["recorded_key"][:12], key[:12], plan_line(spec))
        return [Change("build_key", observed["recorded_key"][:12], key[:12], reason)]
    if observed["sha256"] != observed["recorded_sha256"]:
        reason = "%s changed since it was built (sha256 %s, built %s); %s" % (
            label, observed["sha256"][:12], (observed["recorded_sha256"] or "?")[:12], plan_line(spec))
        return [Change("sha256", observed["sha256"][:12], (observed["recorded_sha256"] or "")[:12], reason)]
    return []


def _say(spec: Dict[str, Any], message: str, **fields: Any) -> None:
    emit("progress", id="wheel_build:" + spec["path"], phase="building", message=message, **fields)


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    path = ctx.path(spec["path"])
    workdir = ctx.owned_path(spec["workdir"])
    if os.path.lexists(path):
        os.unlink(path)  # drift: it goes now, so that a failed or killed build leaves no wheel there
        _record(ctx, path, None)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if _place_staged(spec, path, ctx):
        return
    python = interpreter(spec, ctx)
    facts = build_preflight.gather(spec, python, workdir)
    violations = build_preflight.judge(spec, facts)
    if violations:
        raise ResourceFailure("%s: cannot build %s %s from source on this host; nothing was fetched or compiled:\n"
                              "  - %s" % (spec["path"], spec["project"], spec["ref"], "\n  - ".join(violations)))
    jobs = build_preflight.max_jobs(spec)
    _say(spec, "preflight ok: nvcc %s (%s), %s, %d cores, %s MemAvailable -> MAX_JOBS=%d" % (
        facts["nvcc_release"][1], facts["nvcc"], facts["CXX"]["first_line"], facts["cores"],
        _gib(facts["mem_available"]), jobs), max_jobs=jobs)
    warning = override_warning(spec)
    if warning:
        _say(spec, warning)
        log(warning)
    def say(message: str) -> None:
        _say(spec, message)

    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    commit = build_source.check_out(spec, workdir, say)
    build_source.submodules(spec, workdir, commit, say)
    build_source.patch_setup(spec, workdir, commit)
    built = _build(spec, workdir, python, facts, jobs, path, ctx)
    digest = sha256_file(built)
    os.replace(built, path)
    remove_tree(os.path.dirname(built))
    StatCache(ctx).record(path, os.stat(path), digest)
    _record(ctx, path, {"build_key": spec["build_key"], "sha256": digest, "commit": commit,
                        "arches": spec.get("expect_arches") or [], "override": spec.get("add_supported_arches") or [],
                        "time": time.time()})


def _gib(value: Optional[int]) -> str:
    return "?" if value is None else "%.1f GiB" % (value / float(1 << 30))


def build_environment(spec: Dict[str, Any], facts: Dict[str, Any], python: str, jobs: int) -> Dict[str, str]:
    """The variables the build runs with: the spec's, CUDA_HOME where preflight found nvcc, the venv's bin
    (ninja) and CUDA's bin first on PATH, and MAX_JOBS."""
    env = dict(spec.get("env") or {})
    env["CUDA_HOME"] = facts["cuda_home"]
    env["MAX_JOBS"] = str(jobs)
    env["PATH"] = os.pathsep.join([os.path.join(facts["cuda_home"], "bin"), os.path.dirname(python),
                                   os.environ.get("PATH") or os.defpath])
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def _build(spec: Dict[str, Any], workdir: str, python: str, facts: Dict[str, Any], jobs: int, path: str,
           ctx: Context) -> str:
    """Run the build; the path of the wheel it wrote (in a temp folder beside `path`)."""
    out = os.path.join(os.path.dirname(path), leftovers.temp_prefix() + "wheel")
    remove_tree(out)
    os.makedirs(out)
    watcher = _OutputWatcher(spec, ctx)
    argv = [python, "-m", "pip", "--disable-pip-version-check", "--no-input", "wheel", "--no-build-isolation",
            "--no-deps", "--no-index", "-v", "--wheel-dir", out, workdir]
    _say(spec, "compiling %s %s in %s with MAX_JOBS=%d" % (spec["project"], spec["ref"], workdir, jobs))
    try:
        done = procs.run(argv, cwd=workdir, env=build_environment(spec, facts, python, jobs),
                         on_line=watcher.line)
        if not done.ok:
            raise ResourceFailure("%s: the build of %s %s failed (exit %d); the compiled objects stay in %s for "
                                  "the next apply:\n%s" % (spec["path"], spec["project"], spec["ref"],
                                                           done.returncode, workdir, _failure_text(done)))
        watcher.finished()
        wheels = [name for name in os.listdir(out) if name.endswith(".whl")]
        want = os.path.basename(path)
        if wheels != [want]:
            raise ResourceFailure(
                "%s: the build wrote %s, but the resolution expects %s: the venv's torch or the source's version "
                "is not the resolved one; the wheel was not installed" % (
                    spec["path"], ", ".join(wheels) or "no wheel", want))
    except BaseException:
        remove_tree(out)
        raise
    return os.path.join(out, want)


def _failure_text(done: procs.Completed) -> str:
    """The error lines of a failed build (pip's own last lines rarely say what broke), then its tail."""
    lines = done.output.splitlines()
    errors = [line for line in lines if _ERROR_LINE.search(line)][-8:]
    tail = "\n".join(lines[-15:])
    return ("errors:\n%s\nlast lines:\n%s" % ("\n".join(errors), tail)) if errors else tail


class _OutputWatcher:
    """Reads the build's output as it comes: progress events, and a stop as soon as setup.py names SM
    targets other than the expected ones (a mismatched build is never worth its hours)."""

    def __init__(self, spec: Dict[str, Any], ctx: Context) -> None:
        self.spec = spec
        self.verbose = ctx.verbose
        self.detected: Optional[List[str]] = None
        self.last = 0.0

    def line(self, text: str) -> None:
        if self.verbose:
            log(text)
        match = _DETECTED.search(text)
        if match:
            self.detected = re.findall(r"['\"]([^'\"]+)['\"]", match.group(1))
            _say(self.spec, "SM targets: %s" % ", ".join("sm_" + sm for sm in self.detected), arches=self.detected)
            self._check_arches()
            return
        step = _NINJA_STEP.match(text)
        if step and (time.time() - self.last > PROGRESS_EVERY_SECONDS or step.group(1) == step.group(2)):
            self.last = time.time()
            _say(self.spec, "compiled %s of %s objects" % step.groups(), done=int(step.group(1)),
                 total=int(step.group(2)))

    def _check_arches(self) -> None:
        want = self.spec.get("expect_arches") or []
        if want and sorted(self.detected or []) != sorted(want):
            raise ResourceFailure(
                "%s: setup.py detected SM targets [%s], but the resolution expects [%s]; the build was stopped. "
                "fix: check NUNCHAKU_INSTALL_MODE and the host's GPU" % (
                    self.spec["path"], ", ".join(self.detected or []), ", ".join(want)))

    def finished(self) -> None:
        if self.spec.get("expect_arches") and self.detected is None:
            raise ResourceFailure("%s: the build never printed `Detected SM targets: [...]`, so the arches it was "
                                  "built for are unknown; the wheel was not installed" % self.spec["path"])


def _place_staged(spec: Dict[str, Any], path: str, ctx: Context) -> bool:
    """The controller's cached wheel for this build_key, moved into place instead of building."""
    staged = staging.staged_file(spec, ctx)
    if staged is None:
        return False
    if not staged.endswith("-" + os.path.basename(path)) or not _is_wheel(staged):
        log("%s: the wheel staged by the controller is not %s; discarded it, building instead"
            % (spec["path"], os.path.basename(path)))
        staging.discard(staged)
        return False
    digest = sha256_file(staged)
    if spec.get("staged_sha256") and digest != spec["staged_sha256"]:
        log("%s: the staged wheel has sha256 %s, not %s; discarded it, building instead"
            % (spec["path"], digest[:12], spec["staged_sha256"][:12]))
        staging.discard(staged)
        return False
    os.replace(staged, path)
    StatCache(ctx).record(path, os.stat(path), digest)
    _record(ctx, path, {"build_key": spec["build_key"], "sha256": digest, "from": "controller cache",
                        "time": time.time()})
    _say(spec, "placed %s from the controller's wheel cache (build key %s)" % (
        os.path.basename(path), spec["build_key"][:12]))
    return True


def _is_wheel(path: str) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(".dist-info/WHEEL") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
