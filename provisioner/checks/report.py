"""Check reports as text, JSON, and JUnit XML (for CI dashboards)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from provisioner.checks.model import CheckReport, Status
from provisioner.render.format_version import FORMAT_VERSION

MARKS = {"pass": "ok  ", "fail": "FAIL", "skip": "skip", "error": "ERR "}


def render_text(report: CheckReport) -> str:
    lines = [f"checks on {report.host} ({report.python}) for {report.manifest}"]
    group = None
    for result in report.results:
        if result.group != group:
            group = result.group
            lines.append(f"{group}:")
        where = f"{result.id}@{result.instance}" if result.instance else result.id
        lines.append(f"  {MARKS[result.status]} {where:<26} {result.summary}")
        if result.diagnosis and result.status in ("fail", "error"):
            lines.append(f"       -> {result.diagnosis}")
    words: tuple[tuple[Status, str], ...] = (("pass", "passed"), ("fail", "failed"), ("skip", "skipped"),
                                             ("error", "errors"))
    counts = ", ".join(f"{report.count(status)} {word}" for status, word in words)
    lines.append(counts)
    return "\n".join(lines)


def as_json(report: CheckReport) -> dict[str, Any]:
    data = {"format_version": FORMAT_VERSION, **report.model_dump(mode="json")}
    data["exit_code"] = report.exit_code()
    statuses: tuple[Status, ...] = ("pass", "fail", "skip", "error")
    data["counts"] = {status: report.count(status) for status in statuses}
    return data


def render_json(report: CheckReport) -> str:
    return json.dumps(as_json(report), indent=2, sort_keys=True)


def render_junit(report: CheckReport) -> str:
    """One <testsuite> per group; fail -> <failure>, error -> <error>, skip -> <skipped>."""
    suites = ET.Element("testsuites", name=f"provision check {report.manifest}")
    for group in dict.fromkeys(r.group for r in report.results):
        members = [r for r in report.results if r.group == group]
        suite = ET.SubElement(suites, "testsuite", name=group, tests=str(len(members)),
                              failures=str(sum(r.status == "fail" for r in members)),
                              errors=str(sum(r.status == "error" for r in members)),
                              skipped=str(sum(r.status == "skip" for r in members)),
                              time=f"{sum(r.seconds or 0 for r in members):.3f}", hostname=report.host)
        for result in members:
            name = f"{result.id}@{result.instance}" if result.instance else result.id
            case = ET.SubElement(suite, "testcase", classname=f"provision.{group}", name=name,
                                 time=f"{result.seconds or 0:.3f}")
            details = json.dumps({"measured": result.measured, "thresholds": result.thresholds},
                                 sort_keys=True, default=str)
            if result.status == "fail":
                failure = ET.SubElement(case, "failure", message=result.summary, type="CheckFailed")
                failure.text = f"{result.diagnosis or ''}\n{details}"
            elif result.status == "error":
                error = ET.SubElement(case, "error", message=result.summary, type="CheckError")
                error.text = result.diagnosis or result.summary
            elif result.status == "skip":
                ET.SubElement(case, "skipped", message=result.summary)
            ET.SubElement(case, "system-out").text = f"{result.summary}\n{details}"
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def write_junit(report: CheckReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_junit(report) + "\n", encoding="utf-8")
