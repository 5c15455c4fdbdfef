"""A stand-in for building nunchaku from source: the same shape, a CPU-only extension.

- a bare git repo "nunchaku" with tag v1.2.1 and five submodules (cutlass, json, mio, spdlog,
  Block-Sparse-Attention under third_party/), each its own bare repo at a pinned commit with a header the
  extension includes;
- a setup.py shaped like upstream's v1.2.1: `nvcc --version` parsed as `release X.Y, VX.Y.Z`,
  NUNCHAKU_INSTALL_MODE (FAST: the GPU torch reports, asserted against the official list exactly like
  upstream; ALL: the official list for the nvcc), "Detected SM targets: [...]" on stderr, the version
  `{v}+cu{torch.version.cuda}torch{major.minor}`, and an extension `nunchaku._C` compiled through a real
  ninja build in build/ (MAX_JOBS honoured) that appends each compiled source to build/compile.log;
- a stand-in torch wheel (`torch.version.cuda`, `torch.cuda` for a GPU, and `torch.utils.cpp_extension`
  whose BuildExtension writes build.ninja and runs ninja as torch's does);
- fake nvcc and gcc scripts that print the real `--version` formats.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.gitrepos import GIT_ENV, UpstreamRepo, git, make_upstream
from tests.support.wheels import build_wheel

OFFICIAL_ASSERT = 'assert sm in ["75", "80", "86", "89", "120a", "121a"], f"Unsupported SM {sm}"'
SUBMODULES = {
    "cutlass": ("include/cutlass/standin_cutlass.h", "CUTLASS_STANDIN"),
    "json": ("include/nlohmann/standin_json.h", "JSON_STANDIN"),
    "mio": ("include/mio/standin_mio.h", "MIO_STANDIN"),
    "spdlog": ("include/spdlog/standin_spdlog.h", "SPDLOG_STANDIN"),
    "Block-Sparse-Attention": ("csrc/block_sparse_attn/standin_bsa.h", "BSA_STANDIN"),
}
SOURCES = ["src/activation.c", "src/layernorm.c", "src/Linear.c", "src/Serialization.c", "src/Module.c",
           "src/kernels/gemm_w4a4.c"]
#: Environment variable the stand-in torch reads the GPU's compute capability from ("9.0"; "" for none).
GPU_ENV = "PROVISION_STANDIN_GPU"
DEFAULT_GPU = "8.9"

SETUP_PY = r'''import os
import re
import subprocess
import sys

import setuptools
import torch
from packaging import version as packaging_version
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension


def get_sm_targets() -> list[str]:
    nvcc_path = os.path.join(CUDA_HOME, "bin/nvcc") if CUDA_HOME else "nvcc"
    try:
        nvcc_output = subprocess.check_output([nvcc_path, "--version"]).decode()
        match = re.search(r"release (\d+\.\d+), V(\d+\.\d+\.\d+)", nvcc_output)
        if match:
            nvcc_version = match.group(2)
        else:
            raise Exception("nvcc version not found")
        print(f"Found nvcc version: {nvcc_version}")
    except:
        raise Exception("nvcc not found")

    support_sm120 = packaging_version.parse(nvcc_version) >= packaging_version.parse("12.8")
    support_sm121 = packaging_version.parse(nvcc_version) >= packaging_version.parse("13.0")

    install_mode = os.getenv("NUNCHAKU_INSTALL_MODE", "FAST")
    if install_mode == "FAST":
        ret = []
        for i in range(torch.cuda.device_count()):
            capability = torch.cuda.get_device_capability(i)
            sm = f"{capability[0]}{capability[1]}"
            if sm in ["120"] and support_sm120:
                sm = sm + "a"
            if sm in ["121"] and support_sm121:
                sm = sm + "a"
            OFFICIAL_ASSERT
            if sm not in ret:
                ret.append(sm)
    else:
        assert install_mode == "ALL"
        ret = ["75", "80", "86", "89"]
        if support_sm120:
            ret.extend(["120a"])
        if support_sm121:
            ret.extend(["121a"])
    return ret


if __name__ == "__main__":
    fp = open("nunchaku/__version__.py", "r").read()
    version = eval(fp.strip().split()[-1])

    torch_version = torch.__version__.split("+")[0]
    torch_major_minor_version = ".".join(torch_version.split(".")[:2])
    cuda_version = torch.version.cuda
    version = f"{version}+cu{cuda_version}torch{torch_major_minor_version}"

    ROOT_DIR = os.path.dirname(os.path.abspath(__file__))
    INCLUDE_DIRS = [
        "src",
        "third_party/cutlass/include",
        "third_party/json/include",
        "third_party/mio/include",
        "third_party/spdlog/include",
        "third_party/Block-Sparse-Attention/csrc/block_sparse_attn",
    ]
    INCLUDE_DIRS = [os.path.join(ROOT_DIR, dir) for dir in INCLUDE_DIRS]

    sm_targets = get_sm_targets()
    print(f"Detected SM targets: {sm_targets}", file=sys.stderr)
    assert len(sm_targets) > 0, "No SM targets found"

    GCC_FLAGS = ["-DENABLE_BF16=1", "-DBUILD_NUNCHAKU=1", "-fvisibility=hidden", "-O2"]
    GCC_FLAGS += [f"-DSM_TARGET_{target}=1" for target in sm_targets]

    nunchaku_extension = CUDAExtension(
        name="nunchaku._C",
        sources=["nunchaku/csrc/pybind.c", SOURCES],
        extra_compile_args={"gcc": GCC_FLAGS},
        include_dirs=INCLUDE_DIRS,
    )

    setuptools.setup(
        name="nunchaku",
        version=version,
        packages=setuptools.find_packages(include=["nunchaku"]),
        ext_modules=[nunchaku_extension],
        cmdclass={"build_ext": BuildExtension},
    )
'''

PYBIND_C = r'''#include <Python.h>
#include "cutlass/standin_cutlass.h"
#include "nlohmann/standin_json.h"
#include "mio/standin_mio.h"
#include "spdlog/standin_spdlog.h"
#include "standin_bsa.h"

double nunchaku_kernels_checksum(void);

static PyObject *checksum(PyObject *self, PyObject *args) {
    return PyFloat_FromDouble(nunchaku_kernels_checksum());
}

static PyMethodDef methods[] = {{"checksum", checksum, METH_NOARGS, "kernel checksum"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", NULL, -1, methods};

PyMODINIT_FUNC PyInit__C(void) {
    PyObject *m = PyModule_Create(&module);
    PyModule_AddIntConstant(m, "STANDIN_HEADERS",
                            CUTLASS_STANDIN + JSON_STANDIN + MIO_STANDIN + SPDLOG_STANDIN + BSA_STANDIN);
    return m;
}
'''

TORCH_CPP_EXTENSION = r'''"""Stand-in for torch.utils.cpp_extension: CUDA_HOME found as torch finds it, and a
BuildExtension that compiles through build.ninja in build_temp with MAX_JOBS workers,
as torch's does (CPU sources only)."""
import os
import shlex
import shutil
import subprocess

import setuptools
from setuptools.command.build_ext import build_ext


def _find_cuda_home():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home is None:
        nvcc = shutil.which("nvcc")
        if nvcc is not None:
            home = os.path.dirname(os.path.dirname(nvcc))
        elif os.path.exists("/usr/local/cuda"):
            home = "/usr/local/cuda"
    return home


CUDA_HOME = _find_cuda_home()


def CUDAExtension(name, sources, *args, **kwargs):
    kwargs.setdefault("language", "c")
    flat = [s for group in sources for s in ([group] if isinstance(group, str) else group)]
    return setuptools.Extension(name, flat, *args, **kwargs)


class BuildExtension(build_ext):
    def build_extensions(self):
        subprocess.check_output(["ninja", "--version"])  # torch's verify_ninja_availability
        for ext in self.extensions:
            flags = ext.extra_compile_args.get("gcc", []) if isinstance(ext.extra_compile_args, dict) else []
            ext.extra_compile_args = []
            self._flags = flags
        self.compiler.compile = self._ninja_compile
        super().build_extensions()

    def _ninja_compile(self, sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                       extra_preargs=None, extra_postargs=None, depends=None):
        output_dir = os.path.abspath(output_dir or self.build_temp)
        os.makedirs(output_dir, exist_ok=True)
        objects = [os.path.join(output_dir, os.path.splitext(src)[0] + ".o") for src in sources]
        cc = os.environ.get("CC", "gcc")
        includes = ["-I" + d for d in (include_dirs or [])]
        import sysconfig
        includes.append("-I" + sysconfig.get_paths()["include"])
        cflags = " ".join(shlex.quote(f) for f in ["-fPIC", *includes, *self._flags])
        log = os.path.join(output_dir, "compile.log")
        lines = ["ninja_required_version = 1.3", "cc = " + cc, "cflags = " + cflags, "",
                 "rule compile",
                 "  command = $cc -MMD -MF $out.d $cflags -c $in -o $out && echo $in >> " + shlex.quote(log),
                 "  depfile = $out.d", "  deps = gcc", ""]
        for src, obj in zip(sources, objects):
            lines.append("build %s: compile %s" % (obj, os.path.abspath(src)))
        with open(os.path.join(output_dir, "build.ninja"), "w") as handle:
            handle.write("\n".join(lines) + "\n")
        workers = os.environ.get("MAX_JOBS") or str((os.cpu_count() or 1) + 2)
        with open(os.path.join(output_dir, "max_jobs.log"), "a") as handle:
            handle.write(workers + "\n")
        subprocess.run(["ninja", "-v", "-j", workers], cwd=output_dir, check=True)
        return objects
'''


def _kernel_source(name: str, functions: int) -> str:
    """A C file that takes the compiler a noticeable moment, as a CUDA kernel file takes nvcc minutes."""
    stem = name.replace("/", "_").replace(".", "_")
    body = ['#include "cutlass/standin_cutlass.h"\n#include "standin_bsa.h"\n']
    for i in range(functions):
        body.append(f"double {stem}_{i}(double x) {{ double s = 0; for (int j = 0; j < {i % 7 + 3}; j++) "
                    f"{{ s += x * j / (j + {i}.0); if (s > {i}) s -= x; }} return s; }}")
    total = " + ".join(f"{stem}_{i}(1.5)" for i in range(min(functions, 8)))
    body.append(f"double {stem}_total(void) {{ return {total}; }}")
    return "\n".join(body) + "\n"


def _checksum_source() -> str:
    stems = [s.replace("/", "_").replace(".", "_") for s in SOURCES]
    decls = "".join(f"double {stem}_total(void);\n" for stem in stems)
    total = " + ".join(f"{stem}_total()" for stem in stems)
    return f"{decls}double nunchaku_kernels_checksum(void) {{ return {total}; }}\n"


@dataclass
class SourceUpstream:
    nunchaku: UpstreamRepo
    submodules: dict[str, UpstreamRepo]
    pins: dict[str, str] = field(default_factory=dict)  # third_party/<name> -> commit

    @property
    def commit(self) -> str:
        return self.nunchaku.tags["v1.2.1"]

    def submodule_specs(self) -> list[dict[str, str]]:
        return [{"path": path, "url": self.submodules[path.split("/", 1)[1]].url, "commit": sha}
                for path, sha in sorted(self.pins.items())]


def make_source_upstream(base: Path, functions: int = 150, version: str = "1.2.1",
                         setup_assert: str = OFFICIAL_ASSERT) -> SourceUpstream:
    """The nunchaku repo with its submodules; v1.2.1 is tagged, and a later unpinned commit is on main."""
    subs: dict[str, UpstreamRepo] = {}
    pins: dict[str, str] = {}
    for name, (header, macro) in SUBMODULES.items():
        repo = make_upstream(base, name)
        sha = repo.commit({header: f"#pragma once\n#define {macro} 1\n"}, f"{name} pinned")
        repo.commit({"NEWER.md": "after the pin\n"}, f"{name} after the pin")
        subs[name] = repo
        pins[f"third_party/{name}"] = sha
    nunchaku = make_upstream(base, "nunchaku")
    files = {
        "setup.py": SETUP_PY.replace("OFFICIAL_ASSERT", setup_assert).replace("SOURCES", repr(SOURCES)[1:-1]),
        "nunchaku/__init__.py": "from .__version__ import __version__\n",
        "nunchaku/__version__.py": f'__version__ = "{version}"\n',
        "nunchaku/csrc/pybind.c": PYBIND_C + _checksum_source(),
        ".gitmodules": "".join(f'[submodule "third_party/{n}"]\n\tpath = third_party/{n}\n'
                               f"\turl = https://github.com/example/{n}.git\n" for n in SUBMODULES),
        ".gitignore": "build/\n*.egg-info/\n",
        **{src: _kernel_source(src, functions) for src in SOURCES},
    }
    for name in SUBMODULES:
        files[f"third_party/{name}/.placeholder"] = ""  # replaced by the gitlink below
    for path, content in files.items():
        target = nunchaku.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git("add", "-A", cwd=nunchaku.work)
    for path, sha in pins.items():
        git("rm", "-q", "--cached", f"{path}/.placeholder", cwd=nunchaku.work)
        (nunchaku.work / path / ".placeholder").unlink()
        git("update-index", "--add", "--cacheinfo", f"160000,{sha},{path}", cwd=nunchaku.work)
    git("commit", "-q", "-m", "nunchaku 1.2.1", cwd=nunchaku.work)
    git("tag", "-a", "v1.2.1", "-m", "v1.2.1", cwd=nunchaku.work)
    nunchaku.tags["v1.2.1"] = git("rev-parse", "HEAD", cwd=nunchaku.work)
    git("push", "-q", "--tags", "origin", "HEAD:refs/heads/main", cwd=nunchaku.work)
    return SourceUpstream(nunchaku, subs, pins)


def fake_torch_wheel(directory: Path, version: str = "2.11.0", cuda: str = "13.0") -> Path:
    """torch as a CUDA build labels itself (`2.11.0+cu130`), with the parts nunchaku's setup.py uses."""
    label = "cu" + cuda.replace(".", "")
    init = ("from . import cuda, utils, version\n"
            f"__version__ = {version + '+' + label!r}\n")
    cuda_module = (
        "import os\n"
        f"def _capabilities():\n    value = os.environ.get({GPU_ENV!r}, {DEFAULT_GPU!r})\n"
        "    return [tuple(int(p) for p in v.split('.')) for v in value.split(',') if v]\n"
        "def device_count():\n    return len(_capabilities())\n"
        "def is_available():\n    return device_count() > 0\n"
        "def get_device_capability(i=0):\n    return _capabilities()[i]\n"
    )
    return build_wheel(directory, "torch", f"{version}+{label}", module_body=init, extra_files={
        "torch/version.py": f"cuda = {cuda!r}\n__version__ = {version + '+' + label!r}\n".encode(),
        "torch/cuda.py": cuda_module.encode(),
        "torch/utils/__init__.py": b"",
        "torch/utils/cpp_extension.py": TORCH_CPP_EXTENSION.encode(),
    })


def fake_tool(directory: Path, name: str, version_text: str) -> Path:
    """A program on PATH that prints `version_text` for --version (nvcc, gcc) and fails otherwise (shell
    builtins only: a test may leave little on PATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    lines = "".join("printf '%s\\n' '" + line + "'\n" for line in version_text.splitlines())
    path.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then\n" + lines + "exit 0\nfi\necho \"" + name
                    + ": this stand-in only answers --version\" >&2\nexit 1\n")
    path.chmod(0o755)
    return path


def nvcc_version_text(release: str, full: str) -> str:
    return ("nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2025 NVIDIA Corporation\n"
            "Built on Wed_Aug_20_01:58:59_PM_PDT_2025\n"
            f"Cuda compilation tools, release {release}, V{full}\nBuild cuda_{release}.r{release}/compiler.36424714_0")


def fake_cuda(directory: Path, release: str = "13.0", full: str = "13.0.88") -> Path:
    """A CUDA_HOME whose bin/nvcc prints the real `nvcc --version` of that release."""
    fake_tool(directory / "bin", "nvcc", nvcc_version_text(release, full))
    return directory


def gcc_version_text(program: str, version: str) -> str:
    return (f"{program} (Ubuntu {version}-1ubuntu1~20.04) {version}\nCopyright (C) 2019 Free Software Foundation, "
            "Inc.\nThis is free software; see the source for copying conditions.  There is NO\nwarranty; not even "
            "for MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.")


def build_venv(path: Path, torch_wheel: Path) -> Path:
    """A venv with what a build without isolation needs (setuptools, packaging, ninja from PyPI) and the
    stand-in torch; its interpreter."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    env = {**os.environ, **GIT_ENV, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([str(python), "-m", "pip", "install", "-q", "setuptools", "wheel", "packaging", "ninja",
                    str(torch_wheel)], check=True, env=env, capture_output=True)
    return python
