"""The Finish commands and the stop option of the Sampling panel, in the real window."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QAccessible, QAction, QKeySequence
from PySide6.QtWidgets import QMenu
from pytestqt.qtbot import QtBot

from kl3m_desk.generation import GenerationResult
from kl3m_desk.params import SamplingParams
from kl3m_desk.settings import Settings
from kl3m_desk.stopping import cut_completion
from kl3m_desk.templates import load_library
from kl3m_desk.ui.editor import document_text
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from tests.conftest import LEGAL_DIR, requires_fixtures, requires_tokenizer
from tests.forced_text import force_text

PATENT_INDEMNITY = LEGAL_DIR / "03_indemnification_far_52.227-3.txt"
CURSOR_AFTER = "(b) This indemnity shall"


@pytest.fixture(autouse=True)
def discard_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer "Discard" to the unsaved-changes question, which would block a test run."""
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)


def make_window(qtbot: QtBot) -> MainWindow:
    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(temperature=0, max_new_tokens=400)
    settings.limitations_shown = True
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.fixture
def window(qtbot: QtBot, tiny_model_dir: Path) -> Iterator[MainWindow]:
    """A window with the tiny model loaded; its inference thread is ended after the test."""
    created = make_window(qtbot)
    created.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: created.controller.model is not None, timeout=30_000)
    yield created
    created.controller.shutdown()


def prepare_clause(window: MainWindow, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Put the cursor inside clause (b) of a FAR clause and make the model write the rest."""
    text = PATENT_INDEMNITY.read_text(encoding="utf-8")
    cursor_at = text.index(CURSOR_AFTER) + len(CURSOR_AFTER)
    context, completion = text[:cursor_at], text[cursor_at:]
    assert window.controller.model is not None
    force_text(monkeypatch, window.controller.model, completion)
    window.editor.setPlainText(context)
    cursor = window.editor.textCursor()
    cursor.setPosition(len(context))
    window.editor.setTextCursor(cursor)
    return context, completion


def wait_for_result(qtbot: QtBot, window: MainWindow, action: QAction) -> GenerationResult:
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000) as blocker:
        action.trigger()
    result = blocker.args[0]
    assert isinstance(result, GenerationResult)
    return result


@requires_tokenizer
@requires_fixtures
def test_finish_sentence_inserts_one_sentence(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, completion = prepare_clause(window, monkeypatch)
    result = wait_for_result(qtbot, window, window.finish_sentence_action)
    expected = completion[: completion.index("in its defense.") + len("in its defense.")]
    assert result.stop_reason == "sentence"
    assert result.text == expected
    assert document_text(window.editor.document()) == context + expected
    assert window.speed_label.text().endswith("(end of sentence)")
    # The command overrides the panel's stop option for its own run only.
    assert window.parameters_panel.params().stop_at == "none"


@requires_tokenizer
@requires_fixtures
def test_finish_clause_stops_before_number(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, completion = prepare_clause(window, monkeypatch)
    result = wait_for_result(qtbot, window, window.finish_clause_action)
    expected, _ = cut_completion(completion, "clause", context)
    assert expected.endswith("shall not apply to—")
    assert result.stop_reason == "clause"
    assert document_text(window.editor.document()) == context + expected
    assert window.speed_label.text().endswith("(before the next clause number)")
    assert window.parameters_panel.params().stop_at == "none"


@requires_tokenizer
@requires_fixtures
def test_finish_shortcuts_from_editor(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, completion = prepare_clause(window, monkeypatch)
    window.activateWindow()
    window.editor.setFocus()
    qtbot.waitUntil(window.editor.hasFocus, timeout=5_000)
    modifiers = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000) as blocker:
        qtbot.keyClick(window.editor, Qt.Key.Key_Return, modifiers)
    result = blocker.args[0]
    expected, _ = cut_completion(completion, "clause", context)
    assert result.stop_reason == "clause"
    assert document_text(window.editor.document()) == context + expected

    window.editor.undo()
    assert document_text(window.editor.document()) == context
    modifiers = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000) as blocker:
        qtbot.keyClick(window.editor, Qt.Key.Key_Return, modifiers)
    result = blocker.args[0]
    assert result.stop_reason == "sentence"
    assert result.text.endswith("in its defense.")


def test_finish_commands_in_draft_menu(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    draft_menu = next(
        action.menu()
        for action in window.menuBar().actions()
        if action.text() == "&Draft" and isinstance(action.menu(), QMenu)
    )
    assert isinstance(draft_menu, QMenu)
    accessible_menu = QAccessible.queryAccessibleInterface(draft_menu)
    names = [
        accessible_menu.child(index).text(QAccessible.Text.Name)
        for index in range(accessible_menu.childCount())
    ]
    assert "Finish This Sentence" in names
    assert "Finish This Clause" in names

    sentence = window.finish_sentence_action
    clause = window.finish_clause_action
    assert sentence.shortcut() == QKeySequence("Ctrl+Shift+Return")
    assert clause.shortcut() == QKeySequence("Ctrl+Alt+Return")
    shortcuts = [
        action.shortcut().toString()
        for action in window.findChildren(QAction)
        if not action.shortcut().isEmpty()
    ]
    assert len(shortcuts) == len(set(shortcuts)), f"duplicate shortcuts in {shortcuts}"
    # Without a model the commands cannot run.
    assert not sentence.isEnabled()
    assert not clause.isEnabled()
    window.controller.shutdown()


def test_stop_option_survives_restart(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    box = window.parameters_panel.stop_at_box
    assert box.accessibleName() == "Stop at"
    assert box.currentData() == "none"
    box.setCurrentIndex(box.findData("clause"))
    assert window.parameters_panel.params().stop_at == "clause"
    window.editor.document().setModified(False)
    window.close()
    assert Settings.load().sampling.stop_at == "clause"

    reopened = MainWindow(Settings.load(), load_library())
    qtbot.addWidget(reopened)
    assert reopened.parameters_panel.stop_at_box.currentData() == "clause"
    assert reopened.parameters_panel.params() == Settings.load().sampling
    reopened.controller.shutdown()


@requires_tokenizer
@requires_fixtures
def test_panel_stop_option_applies(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, completion = prepare_clause(window, monkeypatch)
    box = window.parameters_panel.stop_at_box
    box.setCurrentIndex(box.findData("paragraph"))
    result = wait_for_result(qtbot, window, window.generate_action)
    expected, _ = cut_completion(completion, "paragraph", context)
    assert result.stop_reason == "paragraph"
    assert document_text(window.editor.document()) == context + expected
    assert window.speed_label.text().endswith("(end of paragraph)")
