"""Inline suggestions in the real window: ghost text, keys, records, pauses and settings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QKeyCombination, QRect, Qt
from PySide6.QtGui import QAccessible, QColor, QImage, QKeySequence, QPalette, QTextCursor
from PySide6.QtWidgets import QMenu
from pytestqt.qtbot import QtBot

import kl3m_desk.ui.inline_suggestions as inline_suggestions
from kl3m_desk.generation import GenerationResult
from kl3m_desk.params import SamplingParams
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.editor import document_text
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from tests.conftest import hook_engine, requires_tokenizer
from tests.forced_text import force_text

CONTEXT = "7. Indemnification.\n\n(a) The Seller"
FIRST_SENTENCE = " shall indemnify the Buyer against all claims."
SECOND_SENTENCE = " The Seller shall pay all costs of defense."
SUGGESTION = FIRST_SENTENCE + SECOND_SENTENCE


@pytest.fixture(autouse=True)
def discard_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer "Discard" to the unsaved-changes question, which would block a test run."""
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)


def make_window(qtbot: QtBot, inline: bool = True) -> MainWindow:
    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(temperature=0, max_new_tokens=64)
    settings.limitations_shown = True
    settings.suggestions.inline = inline
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.fixture
def window(qtbot: QtBot, tiny_model_dir: Path) -> Iterator[MainWindow]:
    """A window in inline mode with the tiny model loaded; its thread is ended after the test."""
    created = make_window(qtbot)
    created.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: created.controller.model is not None, timeout=30_000)
    created.activateWindow()
    created.editor.setFocus()
    yield created
    created.controller.shutdown()


@pytest.fixture
def forced(window: MainWindow, monkeypatch: pytest.MonkeyPatch) -> MainWindow:
    """The window with the model forced to write SUGGESTION, then end the text."""
    assert window.controller.model is not None
    force_text(monkeypatch, window.controller.model, SUGGESTION, end_with_eos=True)
    return window


def set_document(window: MainWindow, text: str) -> None:
    window.editor.setPlainText(text)
    move_caret(window, len(text))


def move_caret(window: MainWindow, position: int) -> None:
    cursor = window.editor.textCursor()
    cursor.setPosition(position)
    window.editor.setTextCursor(cursor)


def suggest(qtbot: QtBot, window: MainWindow) -> GenerationResult:
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000) as blocker:
        window.generate()
    result = blocker.args[0]
    assert isinstance(result, GenerationResult)
    return result


def press(qtbot: QtBot, window: MainWindow, key: QKeySequence | QKeySequence.StandardKey) -> None:
    """Press the first key combination of `key` in the editor, as this system binds it."""
    combination: QKeyCombination = QKeySequence(key)[0]
    qtbot.keyClick(window.editor, combination.key(), combination.keyboardModifiers())


def undo_steps(window: MainWindow) -> int:
    return window.editor.document().availableUndoSteps()


@requires_tokenizer
def test_suggestion_leaves_document_untouched(qtbot: QtBot, forced: MainWindow) -> None:
    window = forced
    set_document(window, CONTEXT)
    document = window.editor.document()
    document.setModified(False)
    revision, steps = document.revision(), undo_steps(window)
    pieces: list[str] = []
    window.controller.text_ready.connect(pieces.append)

    result = suggest(qtbot, window)

    assert len(pieces) > 1, "the suggestion should stream piece by piece"
    assert result.text == SUGGESTION
    assert window.suggestions.shown
    assert window.suggestions.ghost.text == SUGGESTION
    assert document_text(document) == CONTEXT
    assert document.revision() == revision
    assert undo_steps(window) == steps
    assert document.availableRedoSteps() == 0
    assert not document.isModified()
    assert window.review.marks.passages() == []
    assert window.editor.textCursor().position() == len(CONTEXT)


@requires_tokenizer
def test_ghost_drawn_after_caret(qtbot: QtBot, forced: MainWindow) -> None:
    window = forced
    set_document(window, CONTEXT)
    suggest(qtbot, window)
    editor = window.editor
    assert editor.viewport().width() > 300
    rects = window.suggestions.ghost.line_rects()
    caret = editor.cursorRect()
    assert len(rects) >= 1
    assert rects[0].left() >= caret.left()
    assert rects[0].top() == caret.top()

    def ink(image: QImage, area: QRect) -> int:
        base = editor.palette().color(QPalette.ColorRole.Base)
        count = 0
        for x in range(area.left(), area.right(), 2):
            for y in range(area.top(), area.bottom(), 2):
                if QColor(image.pixel(x, y)) != base:
                    count += 1
        return count

    first_line = rects[0].toRect().adjusted(4, 2, -2, -2)
    assert ink(editor.viewport().grab().toImage(), first_line) > 20

    qtbot.keyClick(editor, Qt.Key.Key_Left)  # the caret leaves the suggestion's start
    assert not window.suggestions.ghost.visible
    assert ink(editor.viewport().grab().toImage(), first_line) == 0


@requires_tokenizer
def test_long_suggestion_wraps_lines(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert window.controller.model is not None
    force_text(monkeypatch, window.controller.model, SUGGESTION * 3, end_with_eos=True)
    set_document(window, CONTEXT)
    window.parameters_panel.row("max_new_tokens").set_value(200)
    suggest(qtbot, window)
    assert window.editor.viewport().width() > 300
    rects = window.suggestions.ghost.line_rects()
    assert len(rects) >= 2
    assert rects[1].left() < rects[0].left(), "wrapped lines start at the text's left edge"
    assert rects[1].top() == rects[0].bottom()
    assert rects[0].right() == rects[1].right()
    assert document_text(window.editor.document()) == CONTEXT


@requires_tokenizer
def test_tab_accepts_whole_suggestion(qtbot: QtBot, forced: MainWindow) -> None:
    window = forced
    set_document(window, CONTEXT)
    steps = undo_steps(window)
    result = suggest(qtbot, window)

    qtbot.keyClick(window.editor, Qt.Key.Key_Tab)

    assert document_text(window.editor.document()) == CONTEXT + SUGGESTION
    assert undo_steps(window) == steps + 1
    assert window.editor.textCursor().position() == len(CONTEXT + SUGGESTION)
    assert window.suggestions.suggestion is None
    assert not window.suggestions.ghost.visible
    passages = window.review.marks.unreviewed()
    assert len(passages) == 1
    assert (passages[0].start, passages[0].end) == (len(CONTEXT), len(CONTEXT + SUGGESTION))
    record = passages[0].record
    assert record.text == SUGGESTION
    assert record.text_offset == 0
    assert record.seed == result.seed
    assert record.stop_reason == "eos"
    assert record.prompt is not None
    assert record.prompt.token_ids == list(result.prompt.ids)

    qtbot.keyClick(window.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert document_text(window.editor.document()) == CONTEXT
    assert window.review.marks.passages() == []


@requires_tokenizer
def test_word_accept_one_undo_step(qtbot: QtBot, forced: MainWindow) -> None:
    window = forced
    set_document(window, CONTEXT)
    steps = undo_steps(window)
    result = suggest(qtbot, window)

    press(qtbot, window, QKeySequence.StandardKey.MoveToNextWord)
    assert document_text(window.editor.document()) == CONTEXT + " shall"
    assert undo_steps(window) == steps + 1
    assert window.suggestions.shown
    assert window.suggestions.ghost.text == SUGGESTION.removeprefix(" shall")

    press(qtbot, window, QKeySequence.StandardKey.MoveToNextWord)
    assert document_text(window.editor.document()) == CONTEXT + " shall indemnify"
    assert undo_steps(window) == steps + 2
    assert window.editor.textCursor().position() == len(CONTEXT + " shall indemnify")

    passages = window.review.marks.unreviewed()
    assert len(passages) == 1, "parts accepted one after another form one passage"
    assert (passages[0].start, passages[0].end) == (len(CONTEXT), len(CONTEXT + " shall indemnify"))
    record = passages[0].record
    assert record.text == " shall indemnify"
    assert record.text_offset == 0
    assert record.seed == result.seed

    qtbot.keyClick(window.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert document_text(window.editor.document()) == CONTEXT + " shall"
    qtbot.keyClick(window.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert document_text(window.editor.document()) == CONTEXT


@requires_tokenizer
def test_sentence_accept_one_undo_step(qtbot: QtBot, forced: MainWindow) -> None:
    window = forced
    set_document(window, CONTEXT)
    steps = undo_steps(window)
    suggest(qtbot, window)

    press(qtbot, window, inline_suggestions.ACCEPT_SENTENCE_KEY)
    assert document_text(window.editor.document()) == CONTEXT + FIRST_SENTENCE
    assert undo_steps(window) == steps + 1
    assert window.suggestions.ghost.text == SECOND_SENTENCE

    press(qtbot, window, inline_suggestions.ACCEPT_SENTENCE_KEY)
    assert document_text(window.editor.document()) == CONTEXT + SUGGESTION
    assert undo_steps(window) == steps + 2
    assert window.suggestions.suggestion is None, "nothing is left to suggest"
    records = [passage.record for passage in window.review.marks.unreviewed()]
    assert [record.text for record in records] == [SUGGESTION]

    qtbot.keyClick(window.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert document_text(window.editor.document()) == CONTEXT + FIRST_SENTENCE


@requires_tokenizer
def test_escape_dismisses_suggestion(qtbot: QtBot, forced: MainWindow) -> None:
    window = forced
    set_document(window, CONTEXT)
    suggest(qtbot, window)
    assert window.suggestions.shown

    qtbot.keyClick(window.editor, Qt.Key.Key_Escape)

    assert window.suggestions.suggestion is None
    assert not window.suggestions.ghost.visible
    assert document_text(window.editor.document()) == CONTEXT
    qtbot.keyClick(window.editor, Qt.Key.Key_Tab)
    assert document_text(window.editor.document()) == CONTEXT + "\t", "Tab types again"


@requires_tokenizer
def test_escape_stops_streaming_suggestion(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert window.controller.model is not None
    force_text(monkeypatch, window.controller.model, SUGGESTION * 10)
    hook_engine(window.controller.model, before=lambda: time.sleep(0.05))
    window.parameters_panel.row("max_new_tokens").set_value(300)
    set_document(window, CONTEXT)
    window.generate()
    qtbot.waitUntil(lambda: window.suggestions.shown, timeout=30_000)
    assert window.controller.is_generating

    qtbot.keyClick(window.editor, Qt.Key.Key_Escape)

    assert not window.controller.is_generating
    assert window.suggestions.suggestion is None
    qtbot.wait(300)
    assert window.suggestions.suggestion is None
    assert document_text(window.editor.document()) == CONTEXT


@requires_tokenizer
def test_typing_dismisses_suggestion(qtbot: QtBot, forced: MainWindow) -> None:
    window = forced
    set_document(window, CONTEXT)
    suggest(qtbot, window)

    qtbot.keyClicks(window.editor, " s")  # also the suggestion's next characters

    assert document_text(window.editor.document()) == CONTEXT + " s"
    assert window.suggestions.suggestion is None
    assert not window.suggestions.ghost.visible
    assert window.review.marks.passages() == []


def next_word_position(window: MainWindow) -> int:
    cursor = QTextCursor(window.editor.textCursor())
    cursor.movePosition(QTextCursor.MoveOperation.NextWord)
    return cursor.position()


def test_ctrl_right_moves_without_suggestion(qtbot: QtBot, window: MainWindow) -> None:
    set_document(window, CONTEXT)
    move_caret(window, CONTEXT.index("The Seller"))
    expected = next_word_position(window)
    assert expected == CONTEXT.index("Seller")

    press(qtbot, window, QKeySequence.StandardKey.MoveToNextWord)

    assert window.editor.textCursor().position() == expected
    assert document_text(window.editor.document()) == CONTEXT


@requires_tokenizer
def test_ctrl_right_moves_when_caret_away(qtbot: QtBot, forced: MainWindow) -> None:
    window = forced
    set_document(window, CONTEXT)
    suggest(qtbot, window)
    move_caret(window, CONTEXT.index("The Seller"))
    assert window.suggestions.suggestion is not None
    assert not window.suggestions.shown

    press(qtbot, window, QKeySequence.StandardKey.MoveToNextWord)

    assert window.editor.textCursor().position() == CONTEXT.index("Seller")
    assert document_text(window.editor.document()) == CONTEXT
    assert window.suggestions.suggestion is not None, "the suggestion waits at its start"
    qtbot.keyClick(window.editor, Qt.Key.Key_Tab)
    assert document_text(window.editor.document()) == CONTEXT.replace("Seller", "\tSeller")
    assert window.suggestions.suggestion is None


@requires_tokenizer
def test_suggestion_shows_again_at_start(qtbot: QtBot, forced: MainWindow) -> None:
    window = forced
    set_document(window, CONTEXT)
    suggest(qtbot, window)
    qtbot.keyClick(window.editor, Qt.Key.Key_Left)
    assert not window.suggestions.ghost.visible
    qtbot.keyClick(window.editor, Qt.Key.Key_Right)
    assert window.suggestions.shown
    assert window.suggestions.ghost.text == SUGGESTION
    qtbot.keyClick(window.editor, Qt.Key.Key_Tab)
    assert document_text(window.editor.document()) == CONTEXT + SUGGESTION


@requires_tokenizer
def test_pause_starts_suggestion(qtbot: QtBot, forced: MainWindow) -> None:
    window = forced
    window.suggestions.automatic_action.setChecked(True)
    window.suggestions.options.delay_box.setValue(400)
    set_document(window, CONTEXT)
    started: list[float] = []
    window.controller.generation_started.connect(lambda _prompt: started.append(time.monotonic()))

    typed_at = 0.0
    for letter in " an":
        qtbot.keyClicks(window.editor, letter)
        typed_at = time.monotonic()
        qtbot.wait(150)  # well under the pause
    assert started == []
    with qtbot.waitSignal(window.controller.generation_finished, timeout=30_000):
        pass
    assert len(started) == 1
    assert started[0] - typed_at >= 0.35
    assert window.suggestions.shown
    assert window.suggestions.anchor == len(CONTEXT + " an")
    assert document_text(window.editor.document()) == CONTEXT + " an"


@requires_tokenizer
def test_typing_cancels_automatic_suggestion(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert window.controller.model is not None
    force_text(monkeypatch, window.controller.model, SUGGESTION * 10)
    hook_engine(window.controller.model, before=lambda: time.sleep(0.05))
    window.parameters_panel.row("max_new_tokens").set_value(300)
    window.suggestions.automatic_action.setChecked(True)
    window.suggestions.options.delay_box.setValue(300)
    set_document(window, CONTEXT)

    qtbot.keyClicks(window.editor, " a")
    qtbot.waitUntil(lambda: window.suggestions.shown, timeout=30_000)
    assert window.controller.is_generating

    qtbot.keyClicks(window.editor, "n")

    assert not window.controller.is_generating
    assert window.suggestions.suggestion is None
    assert document_text(window.editor.document()) == CONTEXT + " an"
    assert window.suggestions.pause_timer.isActive(), "the pause starts again"
    qtbot.keyClick(window.editor, Qt.Key.Key_Left)
    assert not window.suggestions.pause_timer.isActive(), "moving the caret cancels it"
    qtbot.wait(600)
    assert not window.controller.is_generating
    assert window.suggestions.suggestion is None


@requires_tokenizer
def test_suggestion_announced_once(
    qtbot: QtBot, forced: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = forced
    messages: list[str] = []
    monkeypatch.setattr(
        inline_suggestions, "announce", lambda _widget, message: messages.append(message)
    )
    pieces: list[str] = []
    window.controller.text_ready.connect(pieces.append)
    set_document(window, CONTEXT)
    suggest(qtbot, window)
    assert len(pieces) > 1
    assert messages == [f"Suggestion ready, {len(SUGGESTION.split())} words"]


def test_suggestion_options_persist(qtbot: QtBot) -> None:
    window = make_window(qtbot, inline=False)
    suggestions = window.suggestions
    assert not suggestions.inline_action.isChecked()
    assert not suggestions.automatic_action.isEnabled(), "only with inline suggestions"
    suggestions.inline_action.trigger()
    assert suggestions.options.inline_box.isChecked()
    suggestions.options.automatic_box.setChecked(True)
    assert suggestions.automatic_action.isChecked()
    suggestions.options.delay_box.setValue(2500)
    window.editor.document().setModified(False)
    window.close()
    stored = Settings.load().suggestions
    assert (stored.inline, stored.automatic, stored.delay_ms) == (True, True, 2500)

    reopened = MainWindow(Settings.load(), load_library())
    qtbot.addWidget(reopened)
    assert reopened.suggestions.inline_action.isChecked()
    assert reopened.suggestions.automatic_action.isChecked()
    assert reopened.suggestions.options.delay_box.value() == 2500
    assert reopened.suggestions.pause_timer.interval() == 2500
    reopened.controller.shutdown()


def test_inline_toggle_in_draft_menu(qtbot: QtBot) -> None:
    window = make_window(qtbot, inline=False)
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
    assert "Inline Suggestions" in names
    toggle = window.suggestions.inline_action
    assert toggle.isCheckable()
    assert toggle.shortcut() == QKeySequence(inline_suggestions.TOGGLE_SHORTCUT)
    assert window.suggestions.options.delay_box.accessibleName() == "Pause before a suggestion"
    window.activateWindow()
    window.editor.setFocus()
    qtbot.waitUntil(window.editor.hasFocus, timeout=5_000)
    modifiers = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(window.editor, Qt.Key.Key_I, modifiers)
    assert toggle.isChecked()
    assert window.suggestions.options.inline_box.isChecked()
    assert window.settings.suggestions.inline
    window.controller.shutdown()


@requires_tokenizer
def test_word_accept_while_streaming(
    qtbot: QtBot, forced: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = forced
    assert window.controller.model is not None
    hook_engine(window.controller.model, before=lambda: time.sleep(0.05))
    set_document(window, CONTEXT)
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000) as blocker:
        window.generate()
        qtbot.waitUntil(
            lambda: (
                window.suggestions.suggestion is not None
                and window.suggestions.suggestion.next_word() not in (None, "")
            ),
            timeout=30_000,
        )
        assert window.controller.is_generating
        press(qtbot, window, QKeySequence.StandardKey.MoveToNextWord)
        assert document_text(window.editor.document()) == CONTEXT + " shall"
        record = window.review.marks.unreviewed()[0].record
        assert record.seed is None, "the run has not finished yet"
    result = blocker.args[0]
    assert record.seed == result.seed
    assert record.text == " shall"
    assert record.stop_reason == "eos"
    assert window.suggestions.ghost.text == SUGGESTION.removeprefix(" shall")


@requires_tokenizer
def test_part_after_review_gets_own_record(qtbot: QtBot, forced: MainWindow) -> None:
    window = forced
    set_document(window, CONTEXT)
    suggest(qtbot, window)
    press(qtbot, window, inline_suggestions.ACCEPT_SENTENCE_KEY)
    window.review.mark_passage_at_cursor()
    assert window.review.marks.unreviewed() == []

    qtbot.keyClick(window.editor, Qt.Key.Key_Tab)

    assert document_text(window.editor.document()) == CONTEXT + SUGGESTION
    passages = window.review.marks.passages()
    assert [passage.record.reviewed for passage in passages] == [True, False]
    assert passages[1].record.text == SECOND_SENTENCE
    assert passages[1].record.text_offset == len(FIRST_SENTENCE)
    assert (passages[1].start, passages[1].end) == (
        len(CONTEXT + FIRST_SENTENCE),
        len(CONTEXT + SUGGESTION),
    )
