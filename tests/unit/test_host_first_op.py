"""The first-op probe in real child processes: a crash (a real SIGSEGV), a missing kernel image, a crash while
loading, and a clean run are told apart; a nunchaku without the layer is named with its version. torch and
nunchaku._C are stand-ins (no GPU here) that behave like the real ones where the probe depends on it: the
op's arguments, a raised CUDA error, a signal."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from provisioner.checks import host_first_op

TORCH = """\
bfloat16, uint8, float32, float8_e4m3fn = "bfloat16", "uint8", "float32", "float8_e4m3fn"
class device:
    def __init__(self, kind, index):
        self.kind, self.index = kind, index
class Tensor:
    def __init__(self, *shape, dtype=None, device=None):
        self.shape, self.dtype = shape, dtype
def ones(*shape, dtype=None, device=None):
    return Tensor(*shape, dtype=dtype, device=device)
empty = zeros = ones
class cuda:
    @staticmethod
    def synchronize(device=None):
        pass
"""
OP = ("class ops:\n    @staticmethod\n"
      "    def quantize_w4a4_act_fuse_lora(x, out, scales, down, act, smooth, glu, fp4):\n")
EXTENSIONS = {
    "ok": OP + "        assert out.shape == (256, 128) and scales.shape == (4, 256) and scales.dtype == 'bfloat16'\n",
    "crash": "import os, signal\n" + OP + "        os.kill(os.getpid(), signal.SIGSEGV)\n",
    "no_image": OP + "        raise RuntimeError('CUDA error: no kernel image is available for execution on the "
                     "device')\n",
    "crash_on_load": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
}


@pytest.fixture()
def extension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(TORCH)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))

    def make(kind: str) -> str:
        path = tmp_path / kind / "_C.py"
        path.parent.mkdir()
        path.write_text(EXTENSIONS[kind])
        return str(path)

    return make


def test_a_clean_first_op(extension) -> None:  # type: ignore[no-untyped-def]
    result = host_first_op.probe(sys.executable, extension("ok"), 0, "int4")
    assert result == {"stage": "op", "ok": True, "op": "quantize_w4a4_act_fuse_lora"}


def test_a_crash_in_the_first_op_is_named_with_its_signal(extension) -> None:  # type: ignore[no-untyped-def]
    result = host_first_op.probe(sys.executable, extension("crash"), 0, "int4")
    assert result == {"stage": "op", "ok": False, "signal": "SIGSEGV", "error": "the process was killed by SIGSEGV"}


def test_a_missing_kernel_image_is_the_ops_error(extension) -> None:  # type: ignore[no-untyped-def]
    result = host_first_op.probe(sys.executable, extension("no_image"), 0, "int4")
    assert result["stage"] == "op" and result["ok"] is False and "signal" not in result
    assert "no kernel image is available" in result["error"]


def test_a_crash_while_loading(extension) -> None:  # type: ignore[no-untyped-def]
    result = host_first_op.probe(sys.executable, extension("crash_on_load"), 0, "int4")
    assert result["stage"] == "load" and result["signal"] == "SIGSEGV"


def test_no_torch_is_an_error_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("this interpreter has a real torch")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    result = host_first_op.probe(sys.executable, str(tmp_path / "_C.so"), 0, "int4")
    assert result["stage"] == "torch" and result["ok"] is False and "torch" in result["error"]


def _nunchaku(root: Path, files: dict[str, str]) -> None:
    for relative, body in files.items():
        target = root / "nunchaku" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)


@pytest.mark.parametrize("files, expected", [
    # nunchaku 0.3.x: the packer exists, nunchaku.models.linear does not (NK@v0.3.1)
    ({"__init__.py": "", "lora/__init__.py": "", "lora/flux/__init__.py": "",
      "lora/flux/packer.py": "class NunchakuWeightPacker:\n    pass\n", "models/__init__.py": ""},
     "nunchaku 0.3.1+torch2.7 has no nunchaku.models.linear / nunchaku.lora.flux.packer (No module named "
     "'nunchaku.models.linear'); the layer check needs nunchaku >= 1.0.0"),
    ({"__init__.py": "", "lora/__init__.py": "", "lora/flux/__init__.py": "", "lora/flux/packer.py": "",
      "models/__init__.py": "", "models/linear.py": "class SVDQW4A4Linear:\n    pass\n"},
     "nunchaku 0.3.1+torch2.7 has no NunchakuWeightPacker; the layer check needs nunchaku >= 1.0.0"),
])
def test_a_nunchaku_without_the_layer_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               files: dict[str, str], expected: str) -> None:
    from provisioner.checks import host_w4a4

    _nunchaku(tmp_path, files)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "nunchaku" or m.startswith("nunchaku.")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        assert host_w4a4.layer_api("0.3.1+torch2.7") == expected
    finally:  # the stand-in must not outlive the test
        for name in [m for m in sys.modules if m == "nunchaku" or m.startswith("nunchaku.")]:
            del sys.modules[name]
