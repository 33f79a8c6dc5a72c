"""Resource lookup from a source checkout, a frozen bundle and a built wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import kl3m_desk.resources as resources
from tests.conftest import REPOSITORY


def test_source_checkout_resources() -> None:
    resources.resources_root.cache_clear()
    assert resources.resource_path("templates", "governing_law.toml").is_file()
    assert resources.resource_path("icons", "kl3m-desk.svg").is_file()


def test_frozen_bundle_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "resources" / "templates").mkdir(parents=True)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    resources.resources_root.cache_clear()
    try:
        assert resources.resources_root() == tmp_path / "resources"
    finally:
        resources.resources_root.cache_clear()


def test_missing_resource_named() -> None:
    with pytest.raises(resources.ResourceNotFoundError, match=r"no-such-file\.toml"):
        resources.resource_path("templates", "no-such-file.toml")


def test_wheel_contains_resources(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(REPOSITORY),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("kl3m_desk-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "kl3m_desk/resources/templates/governing_law.toml" in names
    assert "kl3m_desk/resources/icons/kl3m-desk.svg" in names
    assert "kl3m_desk/resources.py" in names
