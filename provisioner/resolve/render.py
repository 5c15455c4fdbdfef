"""Human-readable text for a Resolution."""

from __future__ import annotations

from provisioner.resolve.result import ModelChoice, Resolution, SourceBuildChoice

INDENT = "    "


def render_resolution(res: Resolution, name: str | None = None) -> str:
    title = f" {name}" if name else ""
    lines: list[str] = []
    if res.violations:
        count = len(res.violations)
        lines.append(f"Cannot resolve{title}: {count} problem{'s' if count != 1 else ''}")
        for number, violation in enumerate(res.violations, 1):
            lines.append(f"  {number}. [{violation.field}] {violation.reason}")
            lines.append(f"     fix: {violation.fix}")
        if res.gpu:
            lines.append(f"  host: {res.gpu.arch} {res.gpu.name or ''} ({res.gpu.family or 'unknown'})".rstrip())
        _notes(lines, res)
        return "\n".join(lines)
    lines.append(f"Resolved{title} ({res.mode}):")
    if res.gpu:
        gpu = res.gpu
        label = f"GPU {gpu.index} {gpu.name}" if gpu.name else "target GPU"
        vram = f", {gpu.vram_gib:g} GiB" if gpu.vram_gib else ""
        lines.append(f"  gpu       {label}: {gpu.arch} ({gpu.family}{vram})")
        lines.append(f"  {INDENT}      {gpu.why}")
    lines.append(f"  python    {res.python} on {res.platform}")
    if res.torch:
        torch = res.torch
        lines.append(f"  torch     {' '.join(torch.requirements)}")
        lines.append(f"  {INDENT}      index {torch.index_url}")
        lines.append(f"  {INDENT}      {torch.why}")
    if res.nunchaku:
        wheel = res.nunchaku
        lines.append(f"  nunchaku  {wheel.version}: {wheel.filename}" + (" (built on the host)" if wheel.build else ""))
        if wheel.build:
            _build_lines(lines, wheel.build)
        for url in wheel.urls:
            lines.append(f"  {INDENT}      {url}")
        lines.append(f"  {INDENT}      {wheel.why}")
    if res.plugin:
        lines.append(f"  plugin    {res.plugin.name} {res.plugin.ref}: {res.plugin.why}")
        for setting in res.plugin.settings:
            lines.append(f"  {INDENT}      {setting.name}: {setting.value} ({setting.why})")
    if res.comfyui:
        lines.append(f"  comfyui   {res.comfyui.ref}: {res.comfyui.why}")
    if res.fallback:
        lines.append(f"  fallback  {res.fallback}")
    if res.models:
        lines.append("  models")
        for model in res.models:
            role = f"  [{model.role}{f' for {model.companion_of}' if model.companion_of else ''}]" if model.role else ""
            lines.append(f"    {model.folder}/{model.filename}{_size(model)}{role}")
            lines.append(f"    {INDENT}from {model.url or model.repo or '(local)'}"
                         + (f" (sha256 {model.sha256[:12]}…)" if model.sha256 else ""))
            lines.append(f"    {INDENT}{model.why}")
    _notes(lines, res)
    return "\n".join(lines)


def _build_lines(lines: list[str], build: SourceBuildChoice) -> None:
    pad = f"  {INDENT}      "
    lines.append(f"{pad}source {build.repo} {build.ref}" + (f" ({build.commit[:12]})" if build.commit else ""))
    lines.append(f"{pad}submodules " + ", ".join(
        f"{s.path.rsplit('/', 1)[-1]}@{s.commit[:8] if s.commit else 'gitlink'}" for s in build.submodules))
    jobs = str(build.max_jobs) if build.max_jobs else f"auto (~{build.predicted_jobs})" if build.predicted_jobs \
        else "auto"
    lines.append(f"{pad}arches {', '.join(build.arches)} "
                 f"(NUNCHAKU_INSTALL_MODE={build.install_mode}), MAX_JOBS {jobs}"
                 + (f", CC {build.cc}" if build.cc else "") + (f", CXX {build.cxx}" if build.cxx else ""))
    needs = build.prerequisites
    lines.append(f"{pad}needs nvcc {needs.nvcc_major}.x, gcc >= {needs.gcc_min}, ninja, Python headers, "
                 f"~{needs.min_free_bytes / 1e9:.0f} GB disk, {needs.job_memory_bytes / 1024**3:.0f} GiB a job")
    lines.append(f"{pad}kernels: {build.kernel_path}")
    lines.append(f"{pad}build key {build.build_key[:16]}")
    for warning in build.warnings:
        lines.append(f"{pad}WARNING {warning}")


def _size(model: ModelChoice) -> str:
    if model.size is None:
        return ""
    return f" ({'~' if model.size_approx else ''}{model.size / 1e9:.1f} GB)"


def _notes(lines: list[str], res: Resolution) -> None:
    if res.notes:
        lines.append("  notes")
        lines.extend(f"    - {note}" for note in res.notes)
