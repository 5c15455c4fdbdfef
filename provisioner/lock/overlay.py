"""Overlay a lock onto a fresh resolution, and say where the two no longer agree.

Both functions are pure. A fresh resolution names what the manifest wants now (tags, branches,
`main`); the lock says which commit, file and hash that meant when it was locked. Where they agree
the locked identity replaces the floating one; where they do not, the fresh choice is kept and the
disagreement is reported, because only the user can say whether the manifest or the lock is right.
Applying a lock twice changes nothing more: a ref that already equals the locked commit agrees.
"""

from __future__ import annotations

from collections.abc import Iterable

from provisioner.lock.model import Lock, LockedGit, LockedModel, LockedPlugin, LockedTorch, LockedWheel
from provisioner.resolve.result import (
    ComfyUIChoice,
    ModelChoice,
    NunchakuChoice,
    PluginChoice,
    Resolution,
    TorchChoice,
)

FIX = "run `provision lock --update`"
ModelKey = tuple[str | None, str, str]
GitPin = LockedGit | LockedPlugin


def lock_disagreements(resolution: Resolution, lock: Lock, *, with_fix: bool = True) -> list[str]:
    """Every way the fresh resolution differs from what the lock pins, each ending with the fix."""
    found = [
        *_mode(resolution, lock),
        *_torch(resolution.torch, lock.torch),
        *_nunchaku(resolution.nunchaku, lock.nunchaku),
        *_git("ComfyUI", resolution.comfyui, lock.comfyui),
        *_plugins(resolution.plugin, lock),
        *_models(resolution.models, lock.models),
    ]
    return [f"{problem}; {FIX}" if with_fix else problem for problem in found]


def apply_lock(resolution: Resolution, lock: Lock) -> Resolution:
    """A copy of `resolution` with the locked commits, URLs, sha256s and revisions where they agree."""
    out = resolution.model_copy(deep=True)
    if not out.ok or _mode(out, lock):
        return out
    if out.torch is not None and lock.torch is not None and not _torch(out.torch, lock.torch):
        out.torch.index_url = lock.torch.index_url
        out.torch.requirements = list(lock.torch.requirements)
    if out.nunchaku is not None and lock.nunchaku is not None and not _nunchaku(out.nunchaku, lock.nunchaku):
        _pin_wheel(out.nunchaku, lock.nunchaku)
    if out.comfyui is not None and lock.comfyui is not None and not _git("ComfyUI", out.comfyui, lock.comfyui):
        _pin_git(out.comfyui, lock.comfyui)
    if out.plugin is not None:
        locked = _locked_plugin(lock, out.plugin.name)
        if locked is not None and not _git(out.plugin.name, out.plugin, locked):
            _pin_git(out.plugin, locked)
    by_key = {model.key: model for model in lock.models}
    for model in out.models:
        locked_model = by_key.get(_key(model))
        if locked_model is not None and not _model(model, locked_model):
            _pin_model(model, locked_model)
    return out


def facts_difference(resolution: Resolution, lock: Lock) -> str | None:
    """How this host differs from the one the lock was made for, if it does (the pins may still fit)."""
    now = (resolution.gpu.arch if resolution.gpu else None, resolution.python, resolution.platform)
    then = (lock.facts.gpu_arch, lock.facts.python, lock.facts.platform)
    if now == then:
        return None
    return f"the lock was made for a {_host(then)} host; this one is {_host(now)}"


# --- comparisons: each returns the disagreements of one part -------------------------------------


def _mode(resolution: Resolution, lock: Lock) -> list[str]:
    if resolution.mode == lock.mode:
        return []
    return [f"manifest now resolves {resolution.mode or 'nothing'} mode but the lock pins {lock.mode or 'nothing'}"]


def _torch(choice: TorchChoice | None, locked: LockedTorch | None) -> list[str]:
    if choice is None or locked is None:
        return _presence("torch", choice.version if choice else None, locked.version if locked else None)
    if (choice.version, choice.cuda) != (locked.version, locked.cuda):
        return [f"manifest now resolves torch {choice.version} ({_cuda(choice.cuda)}) but the lock pins "
                f"{locked.version} ({_cuda(locked.cuda)})"]
    if choice.index_url != locked.index_url:
        return [f"manifest now installs torch from {choice.index_url} but the lock pins {locked.index_url}"]
    return []


def _nunchaku(choice: NunchakuChoice | None, locked: LockedWheel | None) -> list[str]:
    if choice is None or locked is None:
        return _presence("nunchaku", choice.version if choice else None, locked.version if locked else None)
    if choice.version != locked.version:
        return [f"manifest now resolves nunchaku {choice.version} but the lock pins {locked.version}"]
    if choice.filename != locked.filename:
        return [f"manifest now resolves the nunchaku wheel {choice.filename} but the lock pins {locked.filename}"]
    if choice.build is not None:
        return []  # built on the host: the version and file name (torch, CUDA, platform) say it all
    if locked.url not in choice.urls:
        return [f"manifest now downloads nunchaku from {choice.urls[0]} but the lock pins {locked.url}"]
    if choice.sha256 and locked.sha256 and choice.sha256 != locked.sha256:
        return [f"nunchaku.wheel_sha256 is {choice.sha256} but the lock pins {locked.sha256}"]
    return []


def _git(what: str, choice: ComfyUIChoice | PluginChoice | None, locked: GitPin | None) -> list[str]:
    if choice is None or locked is None:
        return _presence(what, choice.ref if choice else None, locked.ref if locked else None)
    if choice.repo != locked.repo:
        return [f"manifest now clones {what} from {choice.repo} but the lock pins {locked.repo}"]
    if choice.ref not in (locked.ref, locked.commit):
        return [f"manifest now resolves {what} {choice.ref} but the lock pins {locked.ref} ({locked.commit[:12]})"]
    return []


def _plugins(choice: PluginChoice | None, lock: Lock) -> list[str]:
    names = {plugin.name for plugin in lock.plugins}
    found = []
    if choice is not None:
        found += _git(choice.name, choice, _locked_plugin(lock, choice.name))
        names.discard(choice.name)
    found += [f"the lock pins plugin {name}, which the manifest no longer resolves" for name in sorted(names)]
    return found


def _models(choices: Iterable[ModelChoice], locked: list[LockedModel]) -> list[str]:
    by_key = {model.key: model for model in locked}
    found = []
    for choice in choices:
        match = by_key.pop(_key(choice), None)
        if match is None:
            found.append(f"manifest now resolves model {_name(choice.repo, choice.file)} ({choice.folder}), "
                         "which the lock does not pin")
        else:
            found += _model(choice, match)
    found += [f"the lock pins model {_name(m.repo, m.file)} ({m.folder}), which the manifest no longer resolves"
              for m in by_key.values()]
    return found


def _model(choice: ModelChoice, locked: LockedModel) -> list[str]:
    name = _name(choice.repo, choice.file)
    if choice.revision not in (locked.revision, locked.commit):
        return [f"manifest now asks for {name} at revision {choice.revision} but the lock pins {locked.revision}"]
    if locked.commit is None and choice.url != locked.url:
        return [f"manifest now downloads {name} from {choice.url} but the lock pins {locked.url}"]
    if choice.sha256 and locked.sha256 and choice.sha256 != locked.sha256:
        whose = "catalog's" if choice.companion_of else "manifest's"
        return [f"the {whose} sha256 for {name} is {choice.sha256} but the lock pins {locked.sha256}"]
    return []


# --- overlays ------------------------------------------------------------------------------------


def _pin_git(choice: ComfyUIChoice | PluginChoice, locked: GitPin) -> None:
    if choice.ref != locked.commit:
        choice.ref = locked.commit
        choice.why += f"; locked to commit {locked.commit[:12]} ({locked.ref})"


def _pin_wheel(choice: NunchakuChoice, locked: LockedWheel) -> None:
    if choice.build is not None:
        return
    # The locked URL goes first; the others stay as fallbacks, since the sha256 pins the bytes.
    choice.urls = [locked.url, *(url for url in choice.urls if url != locked.url)]
    if locked.sha256 and choice.sha256 != locked.sha256:
        choice.sha256 = locked.sha256
        choice.why += "; sha256 from the lock"


def _pin_model(choice: ModelChoice, locked: LockedModel) -> None:
    if locked.commit is not None and choice.revision != locked.commit:
        choice.why += f"; locked to revision {locked.commit[:12]} ({locked.revision})"
        choice.revision = locked.commit
    choice.url = locked.url
    choice.sha256 = locked.sha256 or choice.sha256
    if locked.size is not None:
        choice.size, choice.size_approx = locked.size, False


# --- small helpers -------------------------------------------------------------------------------


def _locked_plugin(lock: Lock, name: str) -> LockedPlugin | None:
    return next((plugin for plugin in lock.plugins if plugin.name == name), None)


def _key(model: ModelChoice) -> ModelKey:
    return model.repo, model.file, model.folder


def _presence(what: str, now: str | None, then: str | None) -> list[str]:
    """One side has `what` and the other not (a version or ref, or None)."""
    if now is None and then is None:
        return []
    return [f"manifest now resolves {f'{what} {now}' if now else f'no {what}'} but the lock pins "
            f"{f'{what} {then}' if then else 'none'}"]


def _name(repo: str | None, file: str) -> str:
    return f"{repo}/{file}" if repo else file


def _cuda(cuda: str | None) -> str:
    return f"CUDA {cuda}" if cuda else "CPU build"


def _host(parts: tuple[str | None, str | None, str | None]) -> str:
    return " ".join(part or "?" for part in parts)
