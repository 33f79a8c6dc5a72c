"""The frozen app built by packaging/build.py, when CI has built it.

Set KL3M_DESK_FROZEN_APP to the onedir folder (for example dist/kl3m-desk) to run these tests;
without it they are skipped, because building takes minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FROZEN_APP = os.environ.get("KL3M_DESK_FROZEN_APP")
requires_frozen_app = pytest.mark.skipif(
    not FROZEN_APP, reason="KL3M_DESK_FROZEN_APP names no frozen build"
)


def executable() -> Path:
    assert FROZEN_APP is not None
    name = "kl3m-desk.exe" if sys.platform == "win32" else "kl3m-desk"
    return Path(FROZEN_APP).resolve() / name


def run_self_test(tmp_path: Path, *prefix: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    report_path = tmp_path / "report.json"
    completed = subprocess.run(
        [*prefix, str(executable()), "--self-test", "--self-test-report", str(report_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert report_path.is_file(), completed.stderr
    return completed, json.loads(report_path.read_text(encoding="utf-8"))


@requires_frozen_app
def test_frozen_self_test_passes(tmp_path: Path) -> None:
    completed, report = run_self_test(tmp_path)
    assert completed.returncode == 0, json.dumps(report, indent=2)
    assert report["ok"]
    assert report["frozen"]
    assert report["model"]["source"] == "bundled model"
    assert report["generated_tokens"] > 0
    assert [step["name"] for step in report["steps"]] == [
        "templates",
        "model folder",
        "load model",
        "stream completion",
        "save and reopen",
        "save and reopen .docx",
    ]


@requires_frozen_app
def test_frozen_app_opens_no_socket(tmp_path: Path) -> None:
    completed, report = run_self_test(tmp_path)
    assert completed.returncode == 0
    assert report["socket_attempts"] == []


@requires_frozen_app
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_frozen_app_no_network_syscalls(tmp_path: Path) -> None:
    # The operating system's view: no IPv4 or IPv6 socket is created by any thread or child.
    trace = tmp_path / "trace.txt"
    completed, _report = run_self_test(
        tmp_path, "strace", "-f", "-qq", "-e", "trace=socket,connect", "-o", str(trace)
    )
    assert completed.returncode == 0, completed.stderr
    calls = trace.read_text(encoding="utf-8").splitlines()
    network = [line for line in calls if "AF_INET" in line]
    assert network == []
