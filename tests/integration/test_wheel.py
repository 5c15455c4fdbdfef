"""The built wheel carries roles/ and templates/ and works from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_ships_roles_and_templates(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(dist), str(REPO)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel = next(dist.glob("provision-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    assert (target / "provisioner" / "roles" / "layout.yaml").is_file()
    assert (target / "provisioner" / "templates" / "systemd" / "service.j2").is_file()

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    (workdir / "m.yaml").write_text(
        "name: w\nroles: [layout]\nresources:\n  - {kind: file, path: README.txt, template: root-readme.txt.j2}\n"
        "vars: {}\npython: {version: '3.11'}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import provisioner; print(provisioner.__file__)"],
                           capture_output=True, text=True, env=env, cwd=workdir, check=True)
    assert where.stdout.startswith(str(target))
    done = subprocess.run([sys.executable, "-m", "provisioner", "validate", "m.yaml"], capture_output=True,
                          text=True, env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "valid (" in done.stdout
