"""Stand-in upstreams for the whole stack: ComfyUI and ComfyUI-nunchaku as bare git repos with the
real release tags, package indexes with torch stand-ins labelled like download.pytorch.org's
(`2.10.0+cu130` on the cu130 index, `2.10.0+cpu` on the cpu one), a nunchaku wheel named and tagged
like the real ones (with a compiled `_C` member), PyPI's unrelated `nunchaku`, and a Hub serving a model."""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.fake_comfyui import comfyui_main_py, plugin_source
from tests.support.fake_hub import HubState, serve_hub
from tests.support.gitrepos import UpstreamRepo, git, make_upstream
from tests.support.servers import serve_directory
from tests.support.wheels import (
    TORCH_RELEASE,
    build_torch_wheels,
    build_unrelated_nunchaku,
    build_wheel,
    write_simple_index,
)

PY_TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"
NUNCHAKU_VERSION = "1.2.1+cu13.0torch2.10"
NUNCHAKU_WHEEL = f"nunchaku-{NUNCHAKU_VERSION}-{PY_TAG}-{PY_TAG}-linux_x86_64.whl"
PLUGIN_NODES = ["NunchakuFluxDiTLoader", "NunchakuTextEncoderLoaderV2", "NunchakuQwenImageDiTLoader"]
MODEL_FILE = "svdq-int4_r32-flux.1-dev.safetensors"
T5_FILE = "awq-int4-flux.1-t5xxl.safetensors"
MODEL_BYTES = b"stand-in int4 weights\n" * 4096
TORCH_CUDA_VERSION = f"{TORCH_RELEASE['torch']}+cu130"
TORCH_CPU_VERSION = f"{TORCH_RELEASE['torch']}+cpu"


@dataclass
class StackUpstreams:
    comfyui: UpstreamRepo
    plugin: UpstreamRepo
    #: The cu130 PyTorch index, which (like download.pytorch.org's) also serves the other packages.
    index: str
    #: The cpu PyTorch index: torch, torchvision and torchaudio labelled +cpu.
    cpu_index: str
    files: str
    hub: HubState
    hub_endpoint: str
    git_http: str

    def mirrors_file(self, path: Path) -> Path:
        """A provision.mirrors.yaml that sends every upstream of the real manifests to these stand-ins."""
        path.write_text(
            "mirrors:\n"
            f"  - {{prefix: 'https://github.com/', replace: '{self.git_http}/'}}\n"
            f"  - {{prefix: 'https://github.com/nunchaku-ai/nunchaku/releases/download/v1.2.1/', "
            f"replace: '{self.files}/'}}\n"
            f"  - {{prefix: 'https://download.pytorch.org/whl/cu130', replace: '{self.index}'}}\n"
            f"  - {{prefix: 'https://download.pytorch.org/whl/cpu', replace: '{self.cpu_index}'}}\n"
            f"huggingface: {{endpoint: '{self.hub_endpoint}'}}\n"
        )
        return path

    def manifest_body(self, port: int) -> dict[str, object]:
        """A manifest for an RTX 4090 (sm_89) whose every upstream points at a stand-in."""
        return {
            "gpu": {"arch": "sm_89"},
            "python": {"version": f"{sys.version_info[0]}.{sys.version_info[1]}"},
            "torch": {"index_url": self.index},
            "nunchaku": {"wheel_url": f"{self.files}/{NUNCHAKU_WHEEL}"},
            "comfyui": {"repo": self.comfyui.url,
                        "plugins": [{"name": "ComfyUI-nunchaku", "repo": self.plugin.url}]},
            "models": [{"repo": "nunchaku-tech/nunchaku-flux.1-dev",
                        "file": "svdq-{precision}_r32-flux.1-dev.safetensors",
                        "url": f"{self.hub_endpoint}/nunchaku-tech/nunchaku-flux.1-dev/resolve/main/{MODEL_FILE}",
                        "sha256": hashlib.sha256(MODEL_BYTES).hexdigest(),
                        # Its workflow set (encoders, VAE) would come from the real Hub.
                        "companions": False}],
            "env": {"COMFYUI_MODE": "test"},
            "service": {"port": port, "extra_args": ["--disable-auto-launch", "--cpu"]},
            "roles": ["comfyui-nunchaku"],
            "vars": {"pip_index_url": self.index},
        }


def _comfyui_repo(base: Path) -> UpstreamRepo:
    repo = make_upstream(base, "ComfyUI")
    # ComfyUI's own .gitignore keeps plugins, models and the generated config out of its checkout.
    ignore = "/models/\n/custom_nodes/\n!custom_nodes/example_node.py.example\nextra_model_paths.yaml\n/user/\n*.log\n"
    # These tests are about convergence and drift, not ComfyUI's start-up: a quicker stand-in than the
    # realistic 15 s (the service and smoke tests keep that), so every (re)start costs 2 s, not 15.
    files = {"main.py": comfyui_main_py(startup_seconds=2), "requirements.txt": "torch\nprovdep>=1.0\n",
             ".gitignore": ignore, "custom_nodes/example_node.py.example": "# example\n"}
    for tag in ("v0.6.0", "v0.7.0"):
        repo.commit({**files, "comfyui_version.py": f"__version__ = {tag[1:]!r}\n"}, tag, tag=tag)
    return repo


def _plugin_repo(base: Path) -> UpstreamRepo:
    repo = make_upstream(base, "ComfyUI-nunchaku")
    for tag in ("v1.0.0", "v1.0.1", "v1.1.0", "v1.2.0", "v1.2.1"):
        repo.commit({"__init__.py": plugin_source(PLUGIN_NODES) + f"VERSION = {tag[1:]!r}\n",
                     "requirements.txt": "provdep==1.0.0\n"}, tag, tag=tag)
    return repo


def _wheels(base: Path) -> tuple[Path, Path, Path]:
    house = base / "wheelhouse"
    build_torch_wheels(house, "cu130")
    build_wheel(house, "provdep", "1.0.0")
    for version in ("0.15.0", "0.16.1"):
        build_unrelated_nunchaku(house, version)
    cpu_house = base / "wheelhouse-cpu"
    build_torch_wheels(cpu_house, "cpu")
    files = base / "files"
    so_name = f"nunchaku/_C.{PY_TAG.replace('cp', 'cpython-')}-x86_64-linux-gnu.so"
    build_wheel(files, "nunchaku", NUNCHAKU_VERSION, requires=["provdep==1.0.0"],
                extra_files={so_name: b"\x7fELF stand-in"}, tag=f"{PY_TAG}-{PY_TAG}-linux_x86_64")
    return house, cpu_house, files


@contextmanager
def stack_upstreams(base: Path) -> Iterator[StackUpstreams]:
    house, cpu_house, files = _wheels(base)
    web = base / "web"
    write_simple_index(house, web)
    write_simple_index(cpu_house, web / "cpu")
    shutil.copytree(files, web / "files")
    hub = HubState()
    hub.add("nunchaku-tech/nunchaku-flux.1-dev", MODEL_FILE, MODEL_BYTES)
    hub.add("nunchaku-tech/nunchaku-t5", T5_FILE, MODEL_BYTES[:1000])
    comfyui, plugin = _comfyui_repo(base), _plugin_repo(base)
    # Containers cannot see the test's file:// repos, so they are also served over git's dumb HTTP.
    # Under the names the shipped manifests use and under the names GitHub still redirects from.
    for org in ("Comfy-Org", "comfyanonymous"):
        _publish(comfyui, web / "git" / org / "ComfyUI")
    for org in ("nunchaku-ai", "nunchaku-tech"):
        _publish(plugin, web / "git" / org / "ComfyUI-nunchaku")
    with ExitStack() as stack:
        http_base = stack.enter_context(serve_directory(web))
        endpoint = stack.enter_context(serve_hub(hub))
        yield StackUpstreams(comfyui, plugin, f"{http_base}/simple", f"{http_base}/cpu/simple", f"{http_base}/files",
                             hub, endpoint, f"{http_base}/git")


def _publish(repo: UpstreamRepo, target: Path) -> None:
    shutil.copytree(repo.bare, target)
    git("update-server-info", cwd=target)
