"""Error messages seen on real hosts, turned into a cause and a fix. Pure functions of the text."""

from __future__ import annotations

import re
from collections.abc import Callable

# (torch 'X.Y', cuda 'X.Y' or None) -> what installs the nunchaku that fits ("install <wheel file>", or
# "run `provision apply` …" where the manifest builds it on the host), or None when nothing is known.
WheelAdvisor = Callable[[str, str | None], str | None]

IMPOSTOR_SUMMARY = "Optimally partitioning data into piece-wise linear segments."
IMPOSTOR_VERSIONS = ("0.1.0", "0.15.0", "0.15.1", "0.15.2", "0.15.3", "0.15.4", "0.16.0", "0.16.1")


def torch_minor(version: str | None) -> str | None:
    """'2.9.1+cu128' -> '2.9'."""
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return f"{match.group(1)}.{match.group(2)}" if match else None


def wheel_label(version: str | None) -> tuple[str | None, str | None]:
    """(torch 'X.Y', cuda 'X.Y' or None) from a nunchaku version's local label ('+cu13.0torch2.10')."""
    match = re.search(r"\+(?:cu(\d+\.\d+))?torch(\d+\.\d+)", version or "")
    return (match.group(2), match.group(1)) if match else (None, None)


def _install_hint(advisor: WheelAdvisor | None, torch: str | None, cuda: str | None) -> str:
    minor = torch_minor(torch)
    action = advisor(minor, cuda) if advisor and minor else None
    if action:
        return action
    cuda_part = f", CUDA {cuda}" if cuda else ""
    return f"install the nunchaku wheel built for torch {minor or torch}{cuda_part} from the nunchaku releases"


def import_error(message: str, torch: str | None, torch_cuda: str | None, version: str | None,
                 advisor: WheelAdvisor | None = None) -> str:
    """Why `nunchaku._C` (or the package) would not import, and what to install instead."""
    hint = _install_hint(advisor, torch, torch_cuda)
    symbol = re.search(r"undefined symbol: (\S+)", message)
    if symbol:
        built_for, _cuda = wheel_label(version)
        built = f" (built for torch {built_for})" if built_for else ""
        return (f"torch ABI mismatch: nunchaku {version or '?'}{built} was compiled against another torch than "
                f"the venv's torch {torch or '?'} (undefined symbol {symbol.group(1)}); {hint}")
    missing_lib = re.search(r"(lib[\w.+-]+\.so(?:\.[\d.]+)?): cannot open shared object file", message)
    if missing_lib:
        library = missing_lib.group(1)
        cuda_lib = re.match(r"lib(cudart|cublas\w*|cudnn\w*|nvrtc\w*)\.so\.(\d+)", library)
        if cuda_lib:
            return (f"nunchaku {version or '?'} needs {library} (CUDA {cuda_lib.group(2)}) but torch {torch or '?'} "
                    f"brings CUDA {torch_cuda or '?'}: the wheel was built for another CUDA; {hint}")
        return f"a shared library nunchaku needs is missing ({library}); {hint}"
    if "DLL load failed" in message:
        return f"nunchaku's compiled extension does not fit this Python/torch/CUDA; {hint}"
    module = re.search(r"No module named '([\w.]+)'", message)
    if module:
        name = module.group(1)
        if name == "nunchaku":
            return f"nunchaku is not installed in this venv; {hint}"
        if name == "nunchaku._C":
            return (f"the installed `nunchaku` has no compiled extension: it is PyPI's unrelated package of that "
                    f"name (or a broken install): `pip uninstall nunchaku`, then {hint}")
        if name.startswith("nunchaku."):
            return (f"the installed nunchaku {version or ''} lacks {name}: it is older than this code needs; "
                    f"{hint}").replace("nunchaku  lacks", "nunchaku lacks")
        return f"a dependency of nunchaku is missing: pip install {name.split('.')[0]} into the venv"
    if "GLIBC" in message or "GLIBCXX" in message:
        return "the wheel needs a newer C library than this OS has; use a newer OS image or build nunchaku from source"
    return f"nunchaku failed to import; {hint}"


def cuda_error(message: str, arch: str | None, compiled: list[str] | None = None) -> str | None:
    """Cause and fix for a CUDA error raised while running a kernel, or None when not recognised."""
    if "no kernel image is available" in message:
        listed = f" (compiled for: {', '.join(compiled)})" if compiled else ""
        return (f"the kernels were not compiled for this GPU's {arch or 'architecture'}{listed}: install a build whose "
                f"targets include {arch or 'it'}, or use precision auto to fall back where nunchaku has no kernels")
    if "out of memory" in message:
        return "the GPU ran out of memory: stop other processes on it (nvidia-smi lists them) and check again"
    if "driver version is insufficient" in message:
        return "the NVIDIA driver is older than the CUDA runtime torch brings: upgrade the driver"
    if "unspecified launch failure" in message or "illegal memory access" in message:
        return "the kernel crashed on the GPU: a broken build or a hardware fault; reinstall the wheel and retry"
    return None


def nvidia_smi_error(message: str) -> str:
    if "Driver/library version mismatch" in message:
        return ("the loaded kernel module and the user-space driver differ (the driver was upgraded without a "
                "reboot): reboot, or reload the nvidia kernel modules")
    if "couldn't communicate with the NVIDIA driver" in message:
        return "the NVIDIA kernel driver is not loaded: install the driver (or load its module) and reboot"
    if "No devices were found" in message:
        return "the driver sees no GPU: check that the GPU is passed through to this host/container"
    return "nvidia-smi failed: check the NVIDIA driver installation"


def torch_cuda_error(message: str | None, torch: str | None, torch_cuda: str | None, driver_cuda: str | None) -> str:
    """Why torch.cuda.is_available() is False although a GPU is there."""
    text = message or ""
    if torch_cuda is None:
        index = f"cu{driver_cuda.replace('.', '')}" if driver_cuda else "a CUDA"
        return f"torch {torch} is a CPU-only build: install a torch built for CUDA (from the {index} index)"
    if "too old" in text or "driver version is insufficient" in text:
        return (f"the driver supports CUDA {driver_cuda or '?'} but torch {torch} needs CUDA {torch_cuda}: "
                f"upgrade the driver or install a torch built for CUDA {driver_cuda or 'the driver supports'}")
    if "Found no NVIDIA driver" in text:
        return "torch finds no NVIDIA driver: install the driver, or pass the GPU into the container (--gpus all)"
    if "CUDA_VISIBLE_DEVICES" in text or "no CUDA-capable device" in text:
        return "no CUDA device is visible to this process: check CUDA_VISIBLE_DEVICES and the container's GPU access"
    return "torch cannot use the GPU" + (f": {text}" if text else "")
