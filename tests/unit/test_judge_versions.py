"""Versions in the check verdicts are PEP 440 versions, not strings."""

from __future__ import annotations

from provisioner.checks.criteria import Criteria
from provisioner.checks.judge_kernels import judge_package

CRITERIA = Criteria(tflops_floor=lambda arch, name: None,
                    wheel_for=lambda v, torch, cuda, py: f"nunchaku-1.0.1+torch{torch}-{py}-{py}-linux_x86_64.whl")
PACKAGE = {"path": "nunchaku", "arch": "sm_89", "installed": True, "torch": "2.10.0+cu130", "torch_cuda": "13.0",
           "python_tag": "cp312", "location": "/v/site-packages/nunchaku", "extensions": []}


def test_pypi_nunchaku_is_recognized_in_any_spelling_of_its_version() -> None:
    for spelling in ("0.16.1", "0.16.1.0", "v0.15.0", "0.1"):
        result = judge_package(dict(PACKAGE, version=spelling, summary=None), CRITERIA)
        assert result.status == "fail" and "the PyPI package 'nunchaku'" in result.summary, spelling
    other = judge_package(dict(PACKAGE, version="1.2.1", summary=None), CRITERIA)
    assert other.status == "fail" and "no compiled extension" in other.summary
