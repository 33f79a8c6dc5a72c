"""The context view and pinned passages in the drafting window, with the tiny model."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtGui import QTextCursor
from pytestqt.qtbot import QtBot

from kl3m_desk.context import PIN_SEPARATOR
from kl3m_desk.generation import GenerationResult, Prompt
from kl3m_desk.params import SamplingParams
from kl3m_desk.review import sidecar_path
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.context_view import CONTEXT_VIEW_DELAY_MS, PIN_TEXT, UNPIN_TEXT
from kl3m_desk.ui.editor import document_text
from kl3m_desk.ui.highlights import CONTEXT_LAYER, PINS_LAYER, REVIEW_LAYER, HighlightLayers
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice

DEFINITIONS = (
    'ARTICLE 1. DEFINITIONS\n\n1.1 "Affiliate" means any entity that controls, is controlled by '
    'or is under common control with a party.\n\n1.2 "Confidential Information" means all '
    "non-public information that one party discloses to the other."
)
CLAUSE = (
    "{n}. Indemnification. The Supplier shall indemnify, defend and hold harmless the Customer "
    "from and against any and all losses arising out of any breach of this Agreement by the "
    "Supplier.\n\n"
)
# About 2,400 tokens, so a window fits the definitions and only the last part of the clauses.
DOCUMENT = DEFINITIONS + "\n\n" + "".join(CLAUSE.format(n=n) for n in range(2, 60))
MAX_NEW_TOKENS = 24
STATUS_LINE = re.compile(
    r"Context: ([\d,]+) of ([\d,]+) prompt tokens used, ([\d,]+) free; "
    r"1 pinned passage, ([\d,]+) tokens"
)


@pytest.fixture(autouse=True)
def discard_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer "Discard" to the unsaved-changes question, which would block a test run."""
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)


@pytest.fixture
def window(qtbot: QtBot, tiny_model_dir: Path) -> Iterator[MainWindow]:
    """A window with the tiny model loaded; its inference thread is ended after the test."""
    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(max_new_tokens=MAX_NEW_TOKENS, seed=11)
    settings.limitations_shown = True
    created = MainWindow(settings, load_library())
    qtbot.addWidget(created)
    created.show()
    created.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: created.controller.model is not None, timeout=30_000)
    yield created
    created.controller.shutdown()


def set_document(window: MainWindow, text: str) -> None:
    window.editor.setPlainText(text)
    move_cursor(window, len(text))


def move_cursor(window: MainWindow, position: int, anchor: int | None = None) -> None:
    cursor = window.editor.textCursor()
    cursor.setPosition(position if anchor is None else anchor)
    if anchor is not None:
        cursor.setPosition(position, QTextCursor.MoveMode.KeepAnchor)
    window.editor.setTextCursor(cursor)


def pin(window: MainWindow, start: int, end: int) -> None:
    move_cursor(window, end, anchor=start)
    window.context_view.pin_action.trigger()


def layer_ranges(window: MainWindow, name: str) -> list[tuple[int, int]]:
    return [
        (selection.cursor.selectionStart(), selection.cursor.selectionEnd())
        for selection in HighlightLayers.of(window.editor).layer(name)
    ]


def pin_ranges(window: MainWindow) -> list[tuple[int, int]]:
    return [(tracked.start, tracked.end) for tracked in window.context_view.pins.pins()]


def generate_and_wait(qtbot: QtBot, window: MainWindow) -> GenerationResult:
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000) as blocker:
        window.generate()
    result = blocker.args[0]
    assert isinstance(result, GenerationResult)
    return result


def shown_prompt(window: MainWindow) -> Prompt:
    prompt = window.context_view.prompt
    assert prompt is not None, "the context view computed no window"
    return prompt


def test_view_highlights_window_span(window: MainWindow) -> None:
    set_document(window, DOCUMENT)
    pin(window, 0, len(DEFINITIONS))
    move_cursor(window, len(DOCUMENT))
    window.context_view.show_action.trigger()
    assert window.context_view.showing

    prompt = shown_prompt(window)
    assert prompt.pinned == ((0, len(DEFINITIONS)),)
    assert prompt.start > len(DEFINITIONS)
    assert layer_ranges(window, CONTEXT_LAYER) == [
        (0, len(DEFINITIONS)),
        (prompt.start, len(DOCUMENT)),
    ]
    assert layer_ranges(window, PINS_LAYER) == [(0, len(DEFINITIONS))]

    match = STATUS_LINE.match(window.context_label.text())
    assert match is not None, window.context_label.text()
    used, available, free, pinned = (int(group.replace(",", "")) for group in match.groups())
    assert used == prompt.used
    assert available == 1024 - MAX_NEW_TOKENS
    assert used + free == available
    assert pinned == prompt.pinned_tokens

    # Turning the view off removes its highlight, and the pinned passage keeps its own.
    window.context_view.show_action.trigger()
    assert layer_ranges(window, CONTEXT_LAYER) == []
    assert layer_ranges(window, PINS_LAYER) == [(0, len(DEFINITIONS))]


def test_view_waits_for_typing_pause(qtbot: QtBot, window: MainWindow) -> None:
    text = DOCUMENT[:2000]
    set_document(window, text)
    window.context_view.show_action.trigger()
    first = shown_prompt(window)
    assert layer_ranges(window, CONTEXT_LAYER) == [(0, 2000)]

    qtbot.keyClicks(window.editor, " The Customer")
    assert window.context_view.prompt is first  # no tokenizing while the user types
    qtbot.waitUntil(
        lambda: shown_prompt(window).text_length == 2000 + len(" The Customer"),
        timeout=5 * CONTEXT_VIEW_DELAY_MS + 5_000,
    )
    assert layer_ranges(window, CONTEXT_LAYER) == [(0, 2013)]

    move_cursor(window, 500)
    qtbot.waitUntil(lambda: shown_prompt(window).text_length == 500, timeout=5_000)
    assert layer_ranges(window, CONTEXT_LAYER) == [(0, 500)]


def test_view_matches_next_generate(qtbot: QtBot, window: MainWindow) -> None:
    set_document(window, DOCUMENT)
    pin(window, 0, len(DEFINITIONS))
    move_cursor(window, len(DOCUMENT))
    window.context_view.show_action.trigger()
    expected = shown_prompt(window)

    first = generate_and_wait(qtbot, window)
    assert first.prompt.ids == expected.ids
    assert first.prompt.spans == expected.spans
    assert first.prompt.pinned_text == DEFINITIONS + PIN_SEPARATOR
    record = window.review.marks.records()[0]
    assert record.prompt is not None
    assert record.prompt.text.startswith(DEFINITIONS + PIN_SEPARATOR)
    assert record.prompt.pinned == [[0, len(DEFINITIONS)]]

    # The user types on after the completion. The view uses the window's new anchor, and the
    # next Generate uses the window it shows, reusing the cached keys and values.
    qtbot.waitUntil(lambda: window.controller.anchor == first.prompt.start, timeout=5_000)
    move_cursor(window, len(document_text(window.editor.document())))
    qtbot.keyClicks(window.editor, " The Customer shall")
    window.context_view.refresh()
    shown = shown_prompt(window)
    assert shown.start == first.prompt.start

    second = generate_and_wait(qtbot, window)
    assert second.prompt.spans == shown.spans
    pinned = first.prompt.pinned_tokens
    assert second.prompt.ids[:pinned] == first.prompt.ids[:pinned]
    assert second.reused_tokens >= first.prompt.used - 1


def test_pins_follow_edits(qtbot: QtBot, window: MainWindow) -> None:
    text = "Preamble. Definitions text here. Body."
    set_document(window, text)
    start = text.index("Definitions")
    end = text.index(" Body")
    pin(window, start, end)
    pins = window.context_view.pins
    assert pin_ranges(window) == [(start, end)]

    move_cursor(window, 0)
    qtbot.keyClicks(window.editor, "AAA")  # before it: the passage moves
    assert pin_ranges(window) == [(start + 3, end + 3)]
    move_cursor(window, start + 10)
    qtbot.keyClicks(window.editor, "x")  # inside it: the passage grows
    assert pin_ranges(window) == [(start + 3, end + 4)]
    move_cursor(window, end + 4)
    qtbot.keyClicks(window.editor, "y")  # right after it: outside
    move_cursor(window, start + 3)
    qtbot.keyClicks(window.editor, "z")  # right before it: outside
    assert pin_ranges(window) == [(start + 4, end + 5)]
    assert pins.text_of(pins.pins()[0]) == "Definitxions text here."
    assert layer_ranges(window, PINS_LAYER) == [(start + 4, end + 5)]

    move_cursor(window, end + 5, anchor=start + 4)
    window.editor.textCursor().removeSelectedText()
    assert pin_ranges(window) == []
    assert layer_ranges(window, PINS_LAYER) == []


def test_pin_action_toggles(window: MainWindow) -> None:
    set_document(window, DOCUMENT[:1000])
    action = window.context_view.pin_action
    assert not window.context_view.unpin_all_action.isEnabled()

    pin(window, 0, 100)
    assert pin_ranges(window) == [(0, 100)]
    assert "Pinned line" in window.statusBar().currentMessage()
    pin(window, 50, 200)  # overlaps the first: joined into one
    assert pin_ranges(window) == [(0, 200)]

    move_cursor(window, 120)
    assert action.text() == UNPIN_TEXT
    action.trigger()
    assert pin_ranges(window) == []
    assert action.text() == PIN_TEXT
    assert window.statusBar().currentMessage().startswith("Unpinned line")

    action.trigger()  # nothing selected and no pinned passage at the cursor
    assert pin_ranges(window) == []
    assert "Select the text to pin" in window.statusBar().currentMessage()

    pin(window, 0, 100)
    pin(window, 300, 400)
    assert window.context_view.unpin_all_action.isEnabled()
    window.context_view.unpin_all_action.trigger()
    assert pin_ranges(window) == []


def test_pins_over_budget_reported(qtbot: QtBot, window: MainWindow) -> None:
    set_document(window, DOCUMENT)
    pin(window, 0, 6000)  # about 1,300 tokens, more than the whole window
    message = " ".join(window.message_bar.messages())
    assert "The pinned passages need" in message
    assert "The pinned passage was left out of the prompt" in message
    assert window.message_bar.action_button.text() == "Unpin All Passages"

    move_cursor(window, len(DOCUMENT))
    result = generate_and_wait(qtbot, window)
    assert result.prompt.pin_overflow is not None
    assert result.prompt.pinned == ()
    assert "1 pinned passage left out" in window.context_label.text()

    window.message_bar.action_button.click()
    assert pin_ranges(window) == []
    assert not any("pinned passages need" in text for text in window.message_bar.messages())


def test_pins_saved_with_document(window: MainWindow, tmp_path: Path) -> None:
    path = tmp_path / "agreement.txt"
    set_document(window, DOCUMENT[:1500])
    pin(window, 0, len(DEFINITIONS))
    assert window.save_to(path)
    data = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert data["pinned"] == [{"start": 0, "end": len(DEFINITIONS), "text": DEFINITIONS}]

    window.new_document()
    assert pin_ranges(window) == []
    assert window.open_document(path, ask=False)
    assert pin_ranges(window) == [(0, len(DEFINITIONS))]

    # The document was edited in another program, and the pinned text is gone.
    window.new_document()
    path.write_text(DOCUMENT[len(DEFINITIONS) : 1500], encoding="utf-8")
    assert window.open_document(path, ask=False)
    assert pin_ranges(window) == []
    expected = "1 pinned passage of agreement.txt could not be found in its text"
    assert any(expected in text for text in window.message_bar.messages())

    assert window.save_to(path)
    assert not sidecar_path(path).exists()  # no records and no pinned passages left


def test_review_marks_and_pins_coexist(qtbot: QtBot, window: MainWindow) -> None:
    set_document(window, DOCUMENT[:1500])
    generate_and_wait(qtbot, window)
    passage = window.review.marks.passages()[0]
    pin(window, 0, len(DEFINITIONS))
    window.context_view.show_action.trigger()

    assert layer_ranges(window, REVIEW_LAYER) == [(passage.start, passage.end)]
    assert layer_ranges(window, PINS_LAYER) == [(0, len(DEFINITIONS))]
    highlighted = [
        (selection.cursor.selectionStart(), selection.cursor.selectionEnd())
        for selection in window.editor.extraSelections()
    ]
    # Context first, then pinned passages, then review marks, which paint on top.
    assert highlighted == [
        *layer_ranges(window, CONTEXT_LAYER),
        (0, len(DEFINITIONS)),
        (passage.start, passage.end),
    ]
