"""The demo from an installed wheel: configs and recordings ship as package data, 'rtneuro demo' runs from anywhere."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_demo_runs_from_a_wheel_installed_in_a_fresh_environment_from_an_unrelated_folder(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
                   check=True, timeout=300, capture_output=True)
    wheel = next(wheels.glob("rtneuro-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("rtneuro/configs/demo.yaml", "rtneuro/configs/phase_locked.yaml", "rtneuro/replay_data/S003R01.edf",
              "rtneuro/replay_data/S003R02.edf", "rtneuro/replay_data/README.md", "rtneuro/replay_data/xdf/minimal.xdf",
              "rtneuro/replay_data/neurodsp/LICENSE"):
        assert f in names, f
    assert not any("replay_data/ephys" in n for n in names)  # reader test files stay in the checkout

    # a fresh environment: rtneuro only from the wheel (installed by pip), its dependencies from this one
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, timeout=300, capture_output=True)
    target = next((venv / "lib").glob("python3*/site-packages"))
    # after the install (pip must not see this environment's editable rtneuro): a .pth adds the folders of the
    # dependencies, and does not run the .pth files inside them, so the checkout is never on the path
    (target / "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(py), "-c", "import rtneuro; print(rtneuro.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(target)), where

    r = subprocess.run([str(venv / "bin" / "rtneuro"), "demo", "--duration", "2", "--quiet"], cwd=elsewhere, env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    report = json.loads((elsewhere / "demo-report.json").read_text())
    assert report["config"] == str(target / "rtneuro" / "configs" / "demo.yaml")
    # its recordings: ../replay_data/ from the packaged config, inside the installed package
    assert report["streams"]["eeg"]["samples"] > 0 and report["exit_code"] == 0
    assert "demo: " in r.stderr and "report to " in r.stderr
    listed = subprocess.run([str(venv / "bin" / "rtneuro"), "demo", "--list"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=60)
    assert "phase_locked" in listed.stdout and str(target / "rtneuro" / "configs") in listed.stdout
