"""The ComfyUI + Nunchaku stack as role variables: paths, pins, plugins and model files, derived
once from the manifest and its resolution so roles stay plain lists of resources."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from provisioner.catalog import load_catalog
from provisioner.instances import comfy_instances
from provisioner.manifest.model import Manifest

if TYPE_CHECKING:
    from provisioner.resolve import Resolution
    from provisioner.resolve.result import ModelChoice, SourceBuildChoice

#: Where model URLs point before the mirrors file moves them (the catalog's download_url).
HUB_ENDPOINT = "https://huggingface.co"

RESTART_HANDLER = "restart-comfyui"


def needs_resolution(manifest: Manifest) -> bool:
    """Only stack manifests (ComfyUI, models) need the catalog; a plain layout does not."""
    return manifest.comfyui is not None or bool(manifest.models)


def stack_context(manifest: Manifest, resolution: Resolution) -> dict[str, Any]:
    comfy = manifest.comfyui
    comfy_dir = comfy.path if comfy else "ComfyUI"
    models_dir = (comfy.models_root if comfy and comfy.models_root else f"{comfy_dir}/models")
    torch_pins = list(resolution.torch.requirements) if resolution.torch else []
    restart = [RESTART_HANDLER] if manifest.service.enabled and comfy else []
    python = service_argv(manifest, resolution)[0]
    return {
        # An adopted venv (python.adopt) is where everything is installed and ComfyUI runs.
        "venv": manifest.python.adopt or manifest.python.venv,
        "comfy_dir": comfy_dir,
        "models_dir": models_dir,
        "shared_models_root": bool(comfy and comfy.models_root),
        # ComfyUI resolves a relative base_path against the folder of extra_model_paths.yaml; a models root
        # in an extra root (a library, an NFS share) is given as it is, absolute.
        "models_root_from_comfy": models_dir if models_dir.startswith("/") else posixpath.relpath(models_dir,
                                                                                                  comfy_dir),
        # An extra root itself (a mount, an existing library) is the host's: used, never created or chmod-ed.
        "manage_models_dir": models_dir not in manifest.target.extra_roots,
        "torch_pins": torch_pins,
        "torch_index_url": resolution.torch.index_url if resolution.torch else None,
        "nunchaku": _nunchaku(manifest, resolution),
        "comfyui": resolution.comfyui.model_dump(mode="json") if resolution.comfyui else None,
        "plugins": _plugins(manifest, resolution, comfy_dir),
        "models": [
            # An approximate catalog size is for the disk check in preflight; only an exact one is verified.
            {"path": f"{models_dir}/{m.folder}/{m.filename}", "url": m.url, "sha256": m.sha256,
             "size": None if m.size_approx else m.size, "state": "present", "hub": _hub_file(m, python)}
            for m in resolution.models if m.url
        ] + [
            {"path": f"{models_dir}/{m.folder}/{m.filename}", "url": m.url, "sha256": m.sha256, "size": None,
             "state": "absent", "hub": None}
            for m in resolution.absent_models if m.url
        ],
        "hf_auth": _hf_auth(manifest),
        "restart": restart,
        "service_argv": service_argv(manifest, resolution),
        "instances": [
            {"name": i.name, "port": i.port, "env": i.env(), "log": i.log,
             "argv": service_argv(manifest, resolution, i.port)}
            for i in comfy_instances(manifest, cpu=resolution.mode == "cpu")
        ],
    }


def _hub_file(model: ModelChoice, python: str) -> dict[str, Any] | None:
    """The Hub coordinates of a model whose URL is a Hub file URL of its repo (a lock pins the revision in
    the URL to a commit); None for a model the manifest fetches from elsewhere."""
    prefix = f"{HUB_ENDPOINT}/{model.repo}/resolve/"
    if model.repo is None or model.url is None or not model.url.startswith(prefix):
        return None
    revision, _, file = model.url[len(prefix):].partition("/")
    if not revision or not file or "?" in file:
        return None
    return {"repo": model.repo, "revision": unquote(revision), "file": unquote(file), "python": python}


def _nunchaku(manifest: Manifest, resolution: Resolution) -> dict[str, Any] | None:
    wheel = resolution.nunchaku
    if wheel is None:
        return None
    # The wheel's version carries the torch label (1.0.1+torch2.7): pinning it exactly makes a wheel
    # built for another torch, or PyPI's unrelated `nunchaku`, show up as drift.
    version = wheel.filename.split("-")[1]
    path = f"cache/wheels/{wheel.filename}"
    return {"wheel_path": path, "url": wheel.urls[0] if wheel.urls else None, "sha256": wheel.sha256,
            "requirement": f"nunchaku=={version}", "version": version,
            "build": wheel_build_fields(manifest, wheel.build, path) if wheel.build else None,
            "build_tools": list(load_catalog().nunchaku.source_build.build_tools) if wheel.build else []}


def wheel_build_fields(manifest: Manifest, build: SourceBuildChoice, path: str) -> dict[str, Any]:
    """The `wheel_build` resource that makes the wheel at `path` on the host (upstream URLs: the expansion
    sends the repo and every submodule through the mirrors)."""
    env = {"NUNCHAKU_INSTALL_MODE": build.install_mode, "NUNCHAKU_BUILD_WHEELS": "1", "CC": build.cc,
           "CXX": build.cxx, "CUDA_HOME": build.cuda_home}
    return {
        "path": path,
        "project": "nunchaku",
        "repo": build.repo,
        "ref": build.ref,
        "commit": build.commit,
        "submodules": [s.model_dump(mode="json") for s in build.submodules],
        "python": f"{manifest.python.adopt or manifest.python.venv}/bin/python",
        # Kept between applies: an interrupted build resumes from its finished objects.
        "workdir": f"build/nunchaku-{build.build_key[:12]}",
        "env": {key: value for key, value in env.items() if value},
        "add_supported_arches": list(build.add_supported_arches),
        "expect_arches": list(build.arches),
        "prerequisites": build.prerequisites.model_dump(mode="json"),
        "max_jobs": build.max_jobs,
        "build_key": build.build_key,
    }


def _plugins(manifest: Manifest, resolution: Resolution, comfy_dir: str) -> list[dict[str, Any]]:
    chosen = resolution.plugin
    plugins = []
    for plugin in manifest.comfyui.plugins if manifest.comfyui else []:
        repo, ref = plugin.repo, plugin.ref
        if chosen and plugin.name == chosen.name:
            # The resolution carries the locked commit and the mirrored URL for the plugin it chose.
            repo, ref = chosen.repo, chosen.ref
        plugins.append({"name": plugin.name, "repo": repo, "ref": ref, "requirements": plugin.requirements,
                        "path": f"{comfy_dir}/custom_nodes/{plugin.name}"})
    if chosen and not any(p["name"] == chosen.name for p in plugins):
        plugins.append({"name": chosen.name, "repo": chosen.repo, "ref": chosen.ref, "requirements": True,
                        "path": f"{comfy_dir}/custom_nodes/{chosen.name}"})
    return plugins


def _hf_auth(manifest: Manifest) -> dict[str, Any] | None:
    token = manifest.secrets.get("HF_TOKEN")
    return token.model_dump(mode="json") if token else None


def service_argv(manifest: Manifest, resolution: Resolution, port: int | None = None) -> list[str]:
    """ComfyUI's command line (of the instance on `port`), for the service and for the smoke test alike.
    Without a GPU to use (CPU mode) ComfyUI needs --cpu: torch exits "Found no NVIDIA driver on your
    system" otherwise."""
    service = manifest.service
    port = service.port if port is None else port
    cpu = ["--cpu"] if resolution.mode == "cpu" and "--cpu" not in service.extra_args else []
    # An adopted venv is the one ComfyUI runs in (absolute path), else the managed one under the root.
    python = f"{manifest.python.adopt}/bin/python" if manifest.python.adopt else f"{manifest.python.venv}/bin/python"
    return [python, "main.py", "--listen", service.listen, "--port", str(port),
            *cpu, *service.extra_args]
