"""The check report: one result per check, with what was measured, the threshold and a diagnosis."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["pass", "fail", "skip", "error"]

EXIT_OK, EXIT_ERROR, EXIT_FAILED = 0, 1, 2


class CheckResult(BaseModel):
    id: str = Field(description="group.name, e.g. gpu.bf16_gemm")
    status: Status
    summary: str = Field(description="One line: what was found.")
    measured: dict[str, Any] = Field(default_factory=dict)
    thresholds: dict[str, Any] = Field(default_factory=dict)
    diagnosis: str | None = Field(default=None, description="Why it failed and how to fix it.")
    seconds: float | None = None
    instance: str | None = Field(default=None, description="The ComfyUI instance (service.instances) checked.")

    @property
    def group(self) -> str:
        return self.id.split(".", 1)[0]


class CheckReport(BaseModel):
    manifest: str
    host: str
    python: str
    results: list[CheckResult]

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    def exit_code(self) -> int:
        """0 when nothing failed (skips don't fail), 2 when a check failed, 1 when one could not run."""
        if self.count("error"):
            return EXIT_ERROR
        if self.count("fail"):
            return EXIT_FAILED
        return EXIT_OK

    def result(self, check_id: str) -> CheckResult | None:
        return next((r for r in self.results if r.id == check_id), None)
