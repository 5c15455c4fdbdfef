"""The source of a build, staged in its workdir: a git checkout at a verified commit, its submodules at the
tree's gitlinks, and the unsupported-arch override patched into setup.py.

The workdir is kept between applies: build/ (the compiled objects) is untracked and survives every step
here, so a build killed half-way resumes. Fetching is idempotent: a checkout already at the right commit
is reused as it is, a wrong one is reset to the right one (tracked files only; build/ stays).

Submodules are fetched from the URLs the spec names (the controller has applied its mirrors), each into
its own repository at the gitlink, rather than through `git submodule`, which would read .gitmodules'
GitHub URLs.
"""

from __future__ import annotations

import os
import re

from . import procs
from .fsutil import atomic_write, remove_tree
from .protocol import ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional

SETUP = "setup.py"
# nunchaku's FAST-mode check of the detected GPU, e.g.
#   assert sm in ["75", "80", "86", "89", "120a", "121a"], f"Unsupported SM {sm}"
SUPPORTED_ASSERT = re.compile(r'assert sm in \[([^\]]*)\], f"Unsupported SM \{sm\}"')
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


def git(path: str, *args: str) -> List[str]:
    return ["git", "-c", "safe.directory=" + path, "-C", path, *args]


def _out(argv: List[str]) -> Optional[str]:
    done = procs.run(argv)
    return done.output.strip() if done.ok else None


def _has_commit(path: str, commit: str) -> bool:
    return procs.run(git(path, "cat-file", "-e", commit + "^{commit}")).ok


def _repository(path: str, url: str) -> None:
    """A git repository at `path` whose origin is `url` (created when `path` holds none)."""
    if not os.path.isdir(os.path.join(path, ".git")):
        remove_tree(path)  # an empty gitlink folder, or what a killed `git init` left
        os.makedirs(path)
        procs.check(["git", "init", "-q", path], "git init of %s" % path)
    if _out(git(path, "remote", "get-url", "origin")) is None:
        procs.check(git(path, "remote", "add", "origin", url), "git remote add in %s" % path)
    else:
        procs.check(git(path, "remote", "set-url", "origin", url), "git remote set-url in %s" % path)


def _fetch_all(path: str, url: str) -> None:
    procs.check(git(path, "fetch", "-q", "--force", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"),
                "git fetch of %s" % url, timeout=3600)


def resolve(spec: Dict[str, Any], path: str) -> str:
    """The commit `ref` names, fetched if needed; refused when it is not the pinned `commit`."""
    ref = spec["ref"]
    commit = _lookup(path, ref)
    if commit is None or (spec.get("commit") and commit != spec["commit"]):
        _fetch_all(path, spec["repo"])  # a tag fetched earlier may come from another mirror: ask again
        commit = _lookup(path, ref)
    if commit is None:
        raise ResourceFailure("%s: ref %r is not in %s; check nunchaku.source.ref (a tag such as v1.2.1)"
                              % (spec["project"], ref, spec["repo"]))
    if spec.get("commit") and commit != spec["commit"]:
        raise ResourceFailure(
            "%s: %s in %s is commit %s, but the release is commit %s: the tag was moved or the mirror holds "
            "another history; nothing was built. Fix the mirror, or pin nunchaku.source.ref to the commit you mean"
            % (spec["project"], ref, spec["repo"], commit[:12], spec["commit"][:12]))
    return commit


def _lookup(path: str, ref: str) -> Optional[str]:
    if _FULL_SHA.match(ref):
        return ref if _has_commit(path, ref) else None
    for name in ("refs/tags/%s" % ref, "refs/remotes/origin/%s" % ref):
        found = _out(git(path, "rev-parse", "--verify", "-q", name + "^{commit}"))
        if found:
            return found
    return None


def check_out(spec: Dict[str, Any], workdir: str, say: Callable[[str], None]) -> str:
    """The workdir at the spec's commit with its tracked files as the commit has them; the commit."""
    _repository(workdir, spec["repo"])
    commit = resolve(spec, workdir)
    head = _out(git(workdir, "rev-parse", "-q", "--verify", "HEAD"))
    if head != commit:
        say("checking out %s %s (%s)%s" % (spec["project"], spec["ref"], commit[:12],
                                           " over %s" % head[:12] if head else ""))
        procs.check(git(workdir, "-c", "advice.detachedHead=false", "checkout", "-q", "-f", "--detach", commit),
                    "git checkout of %s in %s" % (commit[:12], workdir))
    edited = procs.run(git(workdir, "status", "--porcelain=v1", "-z", "--untracked-files=no",
                           "--ignore-submodules=all"))
    # setup.py is left to patch(); anything else edited is reset to the commit (build/ is untracked: kept).
    if any(entry[3:] != SETUP for entry in edited.output.split("\0") if len(entry) > 3):
        say("resetting files edited in %s" % workdir)
        procs.check(git(workdir, "reset", "-q", "--hard", commit), "git reset in %s" % workdir)
    return commit


def gitlinks(workdir: str, commit: str) -> Dict[str, str]:
    """path -> commit of every submodule in the tree."""
    tree = procs.check(git(workdir, "ls-tree", "-r", "-z", commit), "git ls-tree of %s" % commit[:12])
    links = {}
    for entry in tree.output.split("\0"):
        meta, _, name = entry.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[0] == "160000":
            links[name] = parts[2]
    return links


def submodules(spec: Dict[str, Any], workdir: str, commit: str, say: Callable[[str], None]) -> None:
    """Every submodule the spec lists, at the tree's gitlink; a list that differs from the tree is refused."""
    links = gitlinks(workdir, commit)
    listed = {s["path"].strip("/"): s for s in spec.get("submodules") or []}
    where = "%s %s (%s)" % (spec["project"], spec["ref"], commit[:12])
    problems = []
    for path, entry in sorted(listed.items()):
        if path not in links:
            problems.append("%s has no submodule at %s (its submodules: %s)" % (
                where, path, ", ".join(sorted(links)) or "none"))
        elif entry.get("commit") and links[path] != entry["commit"]:
            problems.append("%s pins submodule %s at %s, but the build expects %s" % (
                where, path, links[path][:12], entry["commit"][:12]))
    unlisted = sorted(set(links) - set(listed))
    if unlisted:
        problems.append("%s has submodules the build does not list: %s" % (where, ", ".join(unlisted)))
    if problems:
        raise ResourceFailure("%s: the source does not match the build's submodule list; nothing was built:\n  - %s"
                              "\nfix: point nunchaku.source at the release (or update the catalog's submodules)"
                              % (spec["project"], "\n  - ".join(problems)))
    for path, entry in sorted(listed.items()):
        _submodule(os.path.join(workdir, path), entry["url"], links[path], path, say)


def _submodule(path: str, url: str, commit: str, name: str, say: Callable[[str], None]) -> None:
    _repository(path, url)
    head = _out(git(path, "rev-parse", "-q", "--verify", "HEAD"))
    dirty = procs.run(git(path, "status", "--porcelain=v1", "--untracked-files=no")).output.strip()
    if head == commit and not dirty:
        return
    if not _has_commit(path, commit):
        say("fetching submodule %s at %s from %s" % (name, commit[:12], url))
        # By commit first (GitHub and protocol v2 servers allow it); else everything the remote has.
        if not procs.run(git(path, "fetch", "-q", "origin", commit), timeout=3600).ok:
            _fetch_all(path, url)
    if not _has_commit(path, commit):
        raise ResourceFailure("submodule %s: commit %s (the gitlink) is not in %s: the mirror lacks it; fix the "
                              "mirror of %s" % (name, commit[:12], url, url))
    procs.check(git(path, "-c", "advice.detachedHead=false", "checkout", "-q", "-f", "--detach", commit),
                "git checkout of submodule %s at %s" % (name, commit[:12]))


def patch_setup(spec: Dict[str, Any], workdir: str, commit: str) -> List[str]:
    """setup.py as the commit has it, plus the override's SMs in its supported list; the SMs added.

    Always derived from the commit's own setup.py, so it is idempotent and undone when the override goes.
    """
    added = list(spec.get("add_supported_arches") or [])
    blob = _exact_blob(workdir, commit)
    wanted = _patched(blob, added, spec, workdir) if added else blob
    target = os.path.join(workdir, SETUP)
    try:
        with open(target, "rb") as handle:
            current: Optional[bytes] = handle.read()
    except OSError:
        current = None
    if current != wanted:
        atomic_write(target, wanted, 0o644)
    return added


def _exact_blob(workdir: str, commit: str) -> bytes:
    import subprocess

    done = subprocess.run(git(workdir, "cat-file", "blob", "%s:%s" % (commit, SETUP)), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise ResourceFailure("%s has no %s at %s" % (workdir, SETUP, commit[:12]))
    return done.stdout


def _patched(blob: bytes, added: List[str], spec: Dict[str, Any], workdir: str) -> bytes:
    text = blob.decode("utf-8")
    found = SUPPORTED_ASSERT.findall(text)
    if len(found) != 1:
        raise ResourceFailure(
            "the unsupported-arch override cannot be applied: %s has %d lines like `assert sm in [...], "
            "f\"Unsupported SM {sm}\"` (the override patches exactly one); the setup.py of %s %s changed shape: "
            "drop nunchaku.build_options.allow_unsupported_arch for this release"
            % (os.path.join(workdir, SETUP), len(found), spec["project"], spec["ref"]))
    listed = found[0]
    have = re.findall(r'"([^"]*)"', listed)
    extra = "".join(', "%s"' % sm for sm in added if sm not in have)
    return SUPPORTED_ASSERT.sub(lambda m: 'assert sm in [%s%s], f"Unsupported SM {sm}"' % (m.group(1), extra),
                                text).encode("utf-8")
