"""Benchmark scripts replace only their own section of the benchmarks page."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPOSITORY

_SPEC = importlib.util.spec_from_file_location(
    "report_page", REPOSITORY / "benchmarks" / "report_page.py"
)
assert _SPEC is not None
assert _SPEC.loader is not None
report_page = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(report_page)


def test_section_replaced_others_kept(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    report_page.replace_section(page, "inference", "## Inference\n\nold inference figures\n")
    report_page.replace_section(page, "long-document", "## Long documents\n\nold long figures\n")
    report_page.replace_section(page, "inference", "## Inference\n\nnew inference figures\n")

    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n")
    assert "new inference figures" in text
    assert "old inference figures" not in text
    assert "old long figures" in text
    assert text.index("## Inference") < text.index("## Long documents")
    assert text.count("<!-- section inference: begin -->") == 1
    assert text.count("<!-- section inference: end -->") == 1


def test_page_without_markers_kept(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nNotes written by hand.\n", encoding="utf-8")
    report_page.replace_section(page, "long-document", "## Long documents\n\nfigures\n")
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nNotes written by hand.\n\n")
    assert text.endswith("figures\n<!-- section long-document: end -->\n")


def test_broken_markers_rejected(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(
        "# Benchmarks\n\n<!-- section inference: begin -->\nfigures\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match="broken 'inference' section"):
        report_page.replace_section(page, "inference", "new")
    assert "figures" in page.read_text(encoding="utf-8")
