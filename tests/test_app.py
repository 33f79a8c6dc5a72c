"""Start-up pieces of the app: logging, the exception hook and the template panel filter."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from kl3m_desk import paths
from kl3m_desk.logging_setup import LOG_FILE_NAME, configure_logging, log_startup
from kl3m_desk.templates import load_library
from kl3m_desk.ui.app import ExceptionReporter
from kl3m_desk.ui.templates_panel import TemplatesPanel


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_log_file_records_versions(restore_logging: object) -> None:
    log_path = configure_logging(debug=True)
    log_startup()
    assert log_path == paths.log_dir() / LOG_FILE_NAME
    text = log_path.read_text(encoding="utf-8")
    assert "kl3m-desk 0.1.0" in text
    assert "torch" in text
    assert "Platform:" in text
    assert logging.getLogger().level == logging.DEBUG


def test_exception_hook_logs_and_shows_dialog(
    qtbot: QtBot,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shown: list[str] = []

    def record_dialog(box: QMessageBox) -> int:
        shown.append(box.text())
        return 0

    monkeypatch.setattr(QMessageBox, "exec", record_dialog)
    reporter = ExceptionReporter(tmp_path / "kl3m-desk.log")
    try:
        raise ValueError("broken widget state")
    except ValueError:
        reporter.handle(*sys.exc_info())  # type: ignore[arg-type]
    qtbot.waitUntil(lambda: len(shown) == 1, timeout=5_000)
    assert "broken widget state" in shown[0]
    assert str(tmp_path / "kl3m-desk.log") in shown[0]
    assert "Uncaught exception" in caplog.text


def test_template_filter_hides_other_clauses(qtbot: QtBot) -> None:
    panel = TemplatesPanel(load_library())
    qtbot.addWidget(panel)
    everything = len(panel.templates())
    assert everything == 11
    # "hold harmless" occurs only in the text of the Indemnification clause, which the filter
    # searches along with title, category and description.
    panel.filter_box.setText("HOLD HARMLESS")
    visible = [
        panel.tree.topLevelItem(index).child(row).text(0)  # type: ignore[union-attr]
        for index in range(panel.tree.topLevelItemCount())
        for row in range(panel.tree.topLevelItem(index).childCount())  # type: ignore[union-attr]
        if not panel.tree.topLevelItem(index).child(row).isHidden()  # type: ignore[union-attr]
    ]
    assert visible == ["Indemnification"]
    panel.filter_box.clear()
    assert len(panel.templates()) == everything
