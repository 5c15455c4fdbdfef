"""Run the generated tests with pytest (in a child process) and read the outcome back from JUnit."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.errors import ProvisionError

EXIT_OK, EXIT_ERROR, EXIT_FAILED = 0, 1, 2
#: A bound on the whole run, so a host that stops answering cannot hang verify.
RUN_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class TestOutcome:
    name: str
    outcome: str  # passed, failed, error, skipped
    message: str = ""


@dataclass
class VerifyResult:
    tests: list[TestOutcome] = field(default_factory=list)
    #: pytest's own output, for a run that did not get as far as a report.
    output: str = ""

    def named(self, outcome: str) -> list[TestOutcome]:
        return [t for t in self.tests if t.outcome == outcome]

    def exit_code(self) -> int:
        if not self.tests or self.named("error"):
            return EXIT_ERROR
        return EXIT_FAILED if self.named("failed") else EXIT_OK

    def as_json(self) -> dict[str, object]:
        counts = {outcome: len(self.named(outcome)) for outcome in ("passed", "failed", "error", "skipped")}
        return {"format_version": 1, "summary": counts, "exit_code": self.exit_code(),
                "tests": [{"name": t.name, "outcome": t.outcome, "message": t.message} for t in self.tests]}


def run_suite(folder: Path, module: Path, junit: Path) -> VerifyResult:
    """pytest over `module` with the folder's pytest.ini; the JUnit file is written to `junit`."""
    argv = [sys.executable, "-m", "pytest", "-c", str(folder / "pytest.ini"), "--rootdir", str(folder),
            "-q", "-rN", "--no-header", f"--junitxml={junit}", "-o", "junit_family=xunit2", str(module)]
    # The user's PYTEST_ADDOPTS would change what runs; plugins of their own still load.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    try:
        done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise ProvisionError(f"the tests in {folder} ran longer than {RUN_TIMEOUT_S:g}s and were stopped") from None
    output = done.stdout + done.stderr
    if not junit.is_file():
        raise ProvisionError(f"pytest did not run the tests in {folder} (exit {done.returncode}):\n{output[-2000:]}")
    return VerifyResult(read_junit(junit), output)


def read_junit(path: Path) -> list[TestOutcome]:
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = "failed" if tag == "failure" else tag
                message = (found.get("message") or found.text or "").strip()
                break
        tests.append(TestOutcome(case.get("name") or "?", outcome, message))
    return tests
