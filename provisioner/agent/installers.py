"""The program that installs into a venv: pip, or uv run with pip's semantics.

`installer: auto` takes uv where the host has one (the venv's bin/uv, the copy provision installed under
.provision/tools/uv, or uv on PATH) and pip otherwise; `uv` installs uv from the resource's index when
none is there; `pip` never looks for uv.

uv is told what pip would do where the two differ:
- indexes: pip takes the best version across the index, the extra indexes and find-links; uv stops at the
  first index that has the package unless `--index-strategy unsafe-best-match`;
- configuration: uv reads no pip.conf and no PIP_* variables, so pip's own view of them (`pip config
  list`) is turned into uv flags: index-url, extra-index-url, find-links, constraint, no-index, pre,
  trusted-host, cert; local indexes and folders that do not exist are dropped, as pip ignores them;
- uv.toml and pyproject.toml settings are ignored (`--no-config`): pip reads neither;
- bytecode: pip compiles it at install time, uv only with `--compile-bytecode`;
- files: pip unpacks each wheel straight into site-packages, writing every file once; uv unpacks into its
  cache and then links or copies into the venv, and a copy writes the whole set twice (20 s of a 67 s
  install of torch with ComfyUI's requirements on a 2-core host). So uv hard-links (`--link-mode
  hardlink`), from a cache of this run's own (`uv-cache` in its temp folder, leftovers.py, on the root's
  file system) that is dropped once the install has succeeded: the venv's files are then its own, and an
  edit in site-packages cannot reach a later venv through the cache, as it would with uv's shared one.
  Later installs of the same run reuse the cache until then; the next apply downloads again, as pip does
  without its HTTP cache.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading

from . import leftovers, linkshare, procs
from .fsutil import remove_tree, which
from .protocol import Context, ResourceFailure, log

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterator, List, Optional, Tuple

CHOICES = ("auto", "uv", "pip")
PIP_ENV = {"PIP_NO_INPUT": "1", "PYTHONNOUSERSITE": "1"}
_bootstrap_lock = threading.Lock()
#: pip's configuration keys that uv would otherwise miss, by the flag each becomes.
_LIST_FLAGS = {"extra-index-url": "--extra-index-url", "find-links": "--find-links", "constraint": "-c",
               "trusted-host": "--allow-insecure-host"}


class Installer:
    """Install and uninstall argv lists for one venv, for pip or uv."""

    def __init__(self, name: str, python: str, uv: Optional[str] = None, cache: Optional[str] = None) -> None:
        self.name = name
        self.python = python
        self.uv = uv
        self.cache = cache
        self._config: Optional[Tuple[List[str], Dict[str, str]]] = None

    def install(self, args: List[str], what: str, stream: bool = False) -> None:
        """Run `install ARGS` (requirements, -r, -c and index options as pip spells them); `what` finishes
        the failure's first line ("pip install" + " of torch" or " -r requirements.txt")."""
        if self.uv is None:
            argv = [self.python, "-m", "pip", "--disable-pip-version-check", "--no-input", "install", *args]
            with linkshare.installer_run("pip") as output:  # the model downloads give it the link meanwhile
                procs.check(argv, "pip install %s" % what, stream=stream, env=PIP_ENV, on_line=output.line)
            return
        flags, env = self._pip_config(args)
        argv = [*self._uv("install"), "--index-strategy", "unsafe-best-match", "--compile-bytecode",
                "--link-mode", "hardlink", *flags, *args]
        with linkshare.installer_run("uv") as output:
            done = procs.run(argv, stream=stream, env={**PIP_ENV, **env}, on_line=output.line)
        if done.ok:
            _drop_cache(self.cache)
            return
        if _unreachable_index(done.output):
            # pip goes on without an index it cannot reach when find-links and the venv hold everything
            # (an offline host installing a downloaded wheel); uv stops. pip keeps that working.
            log("uv could not reach a package index; installing with pip, which goes on without it")
            Installer("pip", self.python).install(args, what, stream)
            return
        raise ResourceFailure("uv pip install %s failed (exit %d):\n%s" % (what, done.returncode, done.tail()))

    def uninstall(self, names: List[str], what: str) -> None:
        if self.uv is None:
            argv = [self.python, "-m", "pip", "--disable-pip-version-check", "--no-input", "uninstall", "-y", *names]
        else:
            argv = [*self._uv("uninstall"), *names]
        procs.check(argv, "%s uninstall of %s" % (self.name, what), env=PIP_ENV)

    def _uv(self, command: str) -> List[str]:
        assert self.uv is not None and self.cache is not None
        return [self.uv, "pip", command, "--python", self.python, "--no-config", "--cache-dir", self.cache]

    def _pip_config(self, args: List[str]) -> Tuple[List[str], Dict[str, str]]:
        """pip's configuration (files and PIP_* variables) as uv flags and variables; args name what the
        resource sets itself (its --index-url replaces the configured one, as on pip's command line)."""
        if self._config is None:
            self._config = pip_config_flags(read_pip_config(self.python))
        flags, env = self._config
        if "--index-url" in args and "--index-url" in flags:
            at = flags.index("--index-url")
            flags = flags[:at] + flags[at + 2:]
        return flags, env


def run_uv_cache(ctx: Context) -> str:
    """uv's cache for this run: in the run's temp folder, removed when the run ends (and by the next
    apply's sweep after a kill)."""
    return os.path.join(leftovers.run_temp_dir(ctx), "uv-cache")


_dropped = itertools.count(1)  # next() on it is atomic under the GIL


def _drop_cache(cache: Optional[str]) -> None:
    """Move the run's uv cache aside (at once, so that a later install starts a new one) and delete it
    in the background: its ~30,000 files hard-linked into the venv cost a second or two to unlink, off the
    path to the service's start. The run's temp folder removal at exit takes whatever is left."""
    if cache is None:
        return
    aside = "%s.done-%d" % (cache, next(_dropped))
    try:
        os.rename(cache, aside)
    except OSError:
        return  # nothing was cached
    threading.Thread(target=remove_tree, args=(aside,), name="uv-cache-removal", daemon=True).start()


class IndexSettings:
    """Where one resource's packages come from: pip's --index-url (None: pip's configured index), extra
    indexes, find-links locations (local ones absolute), and --no-deps."""

    def __init__(self, index_url: Optional[str], extra_index_urls: List[str], find_links: List[str],
                 no_deps: bool = False) -> None:
        self.index_url = index_url
        self.extra_index_urls = extra_index_urls
        self.find_links = find_links
        self.no_deps = no_deps

    def args(self) -> List[str]:
        args: List[str] = ["--index-url", self.index_url] if self.index_url else []
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args + (["--no-deps"] if self.no_deps else [])


class InstallPart:
    """What one resource asks of an install run (requirements as pip spells them, where they come from,
    the constraints that protect torch), and what it records once the run has succeeded."""

    def __init__(self, what: str, installer: Installer, requirements: List[str], index: IndexSettings,
                 constraints: List[str], record: Callable[[Installer], None], own_index_only: bool = False) -> None:
        self.what = what
        self.installer = installer
        self.requirements = requirements
        self.index = index
        self.constraints = constraints
        self.record = record
        #: Every pin is a build only its own index serves (install_batch.py).
        self.own_index_only = own_index_only


def install_parts(parts: List[InstallPart], stream: bool = False) -> None:
    """Install the parts in one run of the first one's installer, then let each record what it installed.

    One part installs exactly as its resource says. Several (install_batch.py decides which may share a
    run) install the union of their requirements and constraints, from all their indexes: the primary
    index is pip's configured one where a part uses it, and the others are extra indexes."""
    urls: List[Optional[str]] = []
    for part in parts:
        if part.index.index_url not in urls:
            urls.append(part.index.index_url)
    if len(urls) == 1 or None in urls:
        primary = urls[0] if len(urls) == 1 else None
    else:
        primary = next((p.index.index_url for p in parts if not p.own_index_only), urls[0])
    extra = [u for u in urls if u is not None and u != primary]
    index = IndexSettings(primary, _unique(extra + [u for p in parts for u in p.index.extra_index_urls]),
                          _unique([link for p in parts for link in p.index.find_links]),
                          any(p.index.no_deps for p in parts))
    constraints = _unique([pin for p in parts for pin in p.constraints])
    requirements = [r for p in parts for r in p.requirements]
    with constraints_file(constraints) as path:
        args = [*index.args(), *requirements] + (["-c", path] if path else [])
        parts[0].installer.install(args, ", ".join(p.what for p in parts), stream=stream)
    for part in parts:
        part.record(parts[0].installer)


def _unique(items: List[str]) -> List[str]:
    return list(dict.fromkeys(items))


@contextlib.contextmanager
def constraints_file(pins: List[str]) -> Iterator[str]:
    """A temporary pip constraints file for `pins` ("" when there are none)."""
    if not pins:
        yield ""
        return
    import tempfile

    fd, path = tempfile.mkstemp(prefix="provision-constraints-", suffix=".txt", dir=procs.temp_dir())
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(pins) + "\n")
        yield path
    finally:
        os.unlink(path)


_NETWORK_ERRORS = ("error sending request", "tcp connect error", "dns error", "Connection refused",
                   "operation timed out", "Network is unreachable")


def _unreachable_index(output: str) -> bool:
    return "Failed to fetch" in output and any(marker in output for marker in _NETWORK_ERRORS)


def record_verified_hashes(venv: str, pins: List[Tuple[str, str, str]]) -> None:
    """Write into direct_url.json the sha256 uv verified for each (name, url, sha256) pin it installed.

    pip records the `#sha256=` it checked there (PEP 610 archive_info.hashes); uv checks it too but
    writes an empty archive_info, which would leave a URL pin looking foreign ("sha256 unrecorded")
    after every install. RECORD's line for the file is updated with it.
    """
    import base64
    import hashlib
    import json

    from .distributions import installed, normalize
    from .fsutil import atomic_write

    dists = installed(venv)
    for name, url, sha256 in pins:
        dist = dists.get(normalize(name))
        if dist is None or dist.get("url") != url or dist.get("sha256"):
            continue
        path = os.path.join(dist["dist_info"], "direct_url.json")
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        archive = data.setdefault("archive_info", {})
        archive["hashes"] = {"sha256": sha256}
        archive["hash"] = "sha256=" + sha256
        body = json.dumps(data, sort_keys=True).encode("utf-8")
        atomic_write(path, body, 0o644)
        digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
        record = os.path.join(dist["dist_info"], "RECORD")
        entry = os.path.basename(dist["dist_info"]) + "/direct_url.json"
        with open(record, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        lines = [line for line in lines if line.split(",", 1)[0] != entry]
        lines.append("%s,sha256=%s,%d" % (entry, digest, len(body)))
        atomic_write(record, ("\n".join(sorted(lines)) + "\n").encode("utf-8"), 0o644)


def read_pip_config(python: str) -> Dict[str, str]:
    """pip's effective settings (`pip config list`): the variable over the install section over global."""
    done = procs.run([python, "-m", "pip", "--disable-pip-version-check", "config", "list"],
                     env={"PYTHONNOUSERSITE": "1"}, timeout=120)
    if not done.ok:
        return {}
    ranked: Dict[str, Tuple[int, str]] = {}
    rank = {"global": 0, "install": 1, ":env:": 2}
    for line in done.output.splitlines():
        key, sep, value = line.partition("=")
        section, dot, name = key.rpartition(".")
        if not sep or not dot or section not in rank:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name not in ranked or ranked[name][0] <= rank[section]:
            ranked[name] = (rank[section], value)
    return {name: value for name, (_, value) in ranked.items()}


def pip_config_flags(config: Dict[str, str]) -> Tuple[List[str], Dict[str, str]]:
    flags: List[str] = []
    env: Dict[str, str] = {}
    if config.get("index-url") and _reachable(config["index-url"]):
        flags += ["--index-url", config["index-url"]]
    for key, flag in sorted(_LIST_FLAGS.items()):
        for value in config.get(key, "").split():
            # A missing constraints file stops pip; a missing index or folder only earns a warning.
            if key in ("constraint", "trusted-host") or _reachable(value):
                flags += [flag, value]
    if _true(config.get("no-index")):
        flags.append("--no-index")
    if _true(config.get("pre")):
        flags += ["--prerelease", "allow"]
    if config.get("cert"):
        env["SSL_CERT_FILE"] = config["cert"]
    timeout = config.get("timeout") or config.get("default-timeout")
    if timeout:
        env["UV_HTTP_TIMEOUT"] = timeout
    return flags, env


def _true(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _reachable(location: str) -> bool:
    """pip skips a local index or folder that is not there ("Location ... is ignored"); uv would fail."""
    if "://" not in location:
        return os.path.exists(location)
    if location.startswith("file://"):
        return os.path.exists(location[len("file://"):])
    return True


def find_uv(venv: str, ctx: Context) -> Optional[str]:
    """The uv to use: the venv's own, the one provision installed under the root, or one on PATH."""
    for candidate in (os.path.join(venv, "bin", "uv"), _tool_uv(ctx)):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return which("uv")


def _tool_uv(ctx: Context) -> str:
    return os.path.join(ctx.state_path("tools", "uv"), "bin", "uv")


def installer_for(spec: Dict[str, object], venv: str, ctx: Context, index_args: List[str]) -> Installer:
    """The installer the resource asks for; `uv` without one on the host installs it from the index first."""
    choice = str(spec.get("installer") or "pip")
    if choice not in CHOICES:
        raise ResourceFailure("installer %r is not one of %s" % (choice, ", ".join(CHOICES)))
    python = os.path.join(venv, "bin", "python")
    if choice == "pip":
        return Installer("pip", python)
    uv = find_uv(venv, ctx)
    if uv is None and choice == "uv":
        uv = _install_uv([python, "-m", "pip"], ctx, index_args)
    if uv is None:
        return Installer("pip", python)
    return Installer("uv", python, uv, run_uv_cache(ctx))


def uv_for_new_venv(choice: str, interpreter: str, staging: str, index_url: Optional[str],
                    ctx: Context) -> Optional[str]:
    """The uv that makes a venv (venv.py) for installer `choice`: one at hand, or for `uv` one installed
    from `index_url` (then pip's configured index) by the pip wheel the interpreter bundles, since no
    venv has a pip yet; None: make it with pip as before."""
    if choice not in ("uv", "auto"):
        return None
    uv = find_uv(staging, ctx)
    if uv is not None or choice != "uv":
        return uv
    wheels = ensurepip_wheels(interpreter)
    pip = next((w for w in wheels or [] if os.path.basename(w).startswith("pip-")), None)
    if pip is None:
        return None
    try:
        # A wheel is a zip that Python imports from: pip runs from its own wheel (as ensurepip runs it).
        index = ["--index-url", index_url] if index_url else []
        return _install_uv([interpreter, os.path.join(pip, "pip")], ctx, index)
    except ResourceFailure as exc:
        log("%s\n(the first install into the venv tries again)" % exc)
        return None


_ENSUREPIP_WHEELS = r"""
import ensurepip, glob, json, os, sys
here = os.path.join(os.path.dirname(ensurepip.__file__), "_bundled")
get = getattr(ensurepip, "_get_packages", None)
if get is not None:  # 3.10-3.11, and distributions that keep the wheels elsewhere (Debian's python-wheels)
    found = [p.wheel_path or os.path.join(here, p.wheel_name) for p in get().values()]
else:  # 3.12+ bundles pip alone; 3.8-3.9 pip and setuptools
    names = ["pip"] + (["setuptools"] if sys.version_info < (3, 12) else [])
    folders = [here, getattr(ensurepip, "_WHEEL_PKG_DIR", None) or ""]
    found = [sorted(w for d in folders if d for w in glob.glob(os.path.join(d, n + "-*.whl")))[-1:] for n in names]
    found = [w[0] for w in found if w] if all(found) else []
print(json.dumps(found))
"""
_wheels_of: Dict[str, Optional[List[str]]] = {}


def ensurepip_wheels(interpreter: str) -> Optional[List[str]]:
    """The wheels `python -m venv` installs with ensurepip (pip; setuptools too before 3.12), or None
    where the interpreter does not say (no ensurepip, as on Debian without python3-venv)."""
    if interpreter not in _wheels_of:
        import json

        done = procs.run([interpreter, "-I", "-c", _ENSUREPIP_WHEELS], timeout=60)
        try:
            found = json.loads(done.output.strip().splitlines()[-1]) if done.ok else None
        except (ValueError, IndexError):
            found = None
        ok = isinstance(found, list) and bool(found) and all(isinstance(w, str) and os.path.isfile(w) for w in found)
        _wheels_of[interpreter] = found if ok else None
    return _wheels_of[interpreter]


def _install_uv(pip: List[str], ctx: Context, index_args: List[str]) -> str:
    """pip-install uv (a wheel holding one binary) into .provision/tools/uv, staged and renamed into place;
    `pip` is the command that runs pip."""
    with _bootstrap_lock:
        tool = ctx.state_path("tools", "uv")
        if os.path.isfile(_tool_uv(ctx)):
            return _tool_uv(ctx)
        staging = leftovers.staging_path(tool)
        remove_tree(staging)
        os.makedirs(os.path.dirname(tool), exist_ok=True)
        log("installing uv into %s" % tool)
        base = [*pip, "--disable-pip-version-check", "--no-input", "install", "--no-deps", "--target", staging]
        done = procs.run([*base, *[a for a in index_args if a != "--no-deps"], "uv"], env=PIP_ENV)
        if not done.ok and "--index-url" in index_args:
            # The resource's own index may be one that serves no uv (PyPI's torch index): pip's configured
            # index (PyPI, or the host's mirror) is the other place a uv wheel can come from.
            remove_tree(staging)
            done = procs.run([*base, "uv"], env=PIP_ENV)
        if not done.ok or not os.path.isfile(os.path.join(staging, "bin", "uv")):
            remove_tree(staging)
            raise ResourceFailure(
                "installer uv: no uv on the host and installing it with pip failed (exit %d):\n%s\nfix: put uv "
                "on the host's PATH or its wheel on the index, or set python.installer: pip (or auto)"
                % (done.returncode, done.tail()))
        binary = os.path.join(staging, "bin", "uv")
        os.chmod(binary, os.stat(binary).st_mode | 0o755)  # pip --target keeps the wheel's mode bits
        os.rename(staging, tool)
        return _tool_uv(ctx)
