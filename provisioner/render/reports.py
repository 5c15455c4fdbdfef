"""Plan and apply reports on stdout: the full text, or under --quiet only the summary (and errors)."""

from __future__ import annotations

from provisioner.engine import ApplyReport, PlanReport
from provisioner.render.terminal import echo, is_quiet
from provisioner.report import Masker, plan_summary, render_apply, render_apply_quiet, render_plan


def show_plan(report: PlanReport, mask: Masker, show_ok: bool = True) -> None:
    echo(mask(plan_summary(report)) if is_quiet() else render_plan(report, mask, show_ok=show_ok))


def show_apply(report: ApplyReport, mask: Masker) -> None:
    echo(render_apply_quiet(report, mask) if is_quiet() else render_apply(report, mask))
