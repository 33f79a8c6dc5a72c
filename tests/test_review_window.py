"""Review marks in the drafting window, with a real inference thread, the tiny model and files."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QFont, QHelpEvent, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox, QToolTip
from pytestqt.qtbot import QtBot

from kl3m_desk.generation import GenerationResult, stream_completion
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import SamplingParams
from kl3m_desk.review import load_records, sidecar_path, utf16_length
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.editor import document_text, to_document_newlines
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from kl3m_desk.ui.review_commands import UnreviewedChoice
from kl3m_desk.ui.review_marks import TrackedPassage
from tests.conftest import TRICKY_TEXT, hook_engine, legal_fixture_paths


def legal_text() -> str:
    """Return two paragraphs of real contract text, or a stand-in where the fixtures are absent."""
    paths = legal_fixture_paths()
    if paths:
        first = paths[0].read_text(encoding="utf-8").strip()
        second = paths[1].read_text(encoding="utf-8").strip()
        return f"{first[:400]}\n\n{second[:400]}"
    return (
        "This Agreement shall be governed by the laws of the State of Delaware.\n\n"
        "The Receiving Party shall hold the Confidential Information in strict confidence."
    )


DOCUMENT = legal_text()
FIRST_PARAGRAPH_END = DOCUMENT.index("\n\n")


@pytest.fixture(autouse=True)
def discard_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer "Discard" to the unsaved-changes question, which would block a test run."""
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)


def make_window(qtbot: QtBot, **sampling: object) -> MainWindow:
    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(**sampling)
    settings.limitations_shown = True
    # The reference computation, as the `tiny_model` fixture loads it, so records can be
    # generated again with that fixture.
    settings.device = "cpu"
    settings.precision = "exact"
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.fixture
def window(qtbot: QtBot, tiny_model_dir: Path) -> Iterator[MainWindow]:
    """A window with the tiny model loaded. Its inference thread is ended after the test."""
    created = make_window(qtbot, max_new_tokens=24, seed=11)
    created.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: created.controller.model is not None, timeout=30_000)
    yield created
    created.controller.shutdown()


def set_document(window: MainWindow, text: str) -> None:
    window.editor.setPlainText(text)
    move_cursor(window, utf16_length(text))


def move_cursor(window: MainWindow, position: int) -> None:
    cursor = window.editor.textCursor()
    cursor.setPosition(position)
    window.editor.setTextCursor(cursor)


def generate_at(qtbot: QtBot, window: MainWindow, position: int) -> GenerationResult:
    move_cursor(window, position)
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000) as blocker:
        window.generate()
    result = blocker.args[0]
    assert isinstance(result, GenerationResult)
    assert result.text, "the tiny model wrote nothing, so choose another seed"
    return result


def passage_text(window: MainWindow, passage: TrackedPassage) -> str:
    cursor = QTextCursor(window.editor.document())
    cursor.setPosition(passage.start)
    cursor.setPosition(passage.end, QTextCursor.MoveMode.KeepAnchor)
    return cursor.selectedText().replace("\u2029", "\n")


def selected_range(window: MainWindow) -> tuple[int, int]:
    cursor = window.editor.textCursor()
    return cursor.selectionStart(), cursor.selectionEnd()


def highlighted_ranges(window: MainWindow) -> list[tuple[int, int]]:
    return [
        (selection.cursor.selectionStart(), selection.cursor.selectionEnd())
        for selection in window.editor.extraSelections()
    ]


def two_passages(qtbot: QtBot, window: MainWindow) -> tuple[TrackedPassage, TrackedPassage]:
    """Generate after the first paragraph and at the end, and return both passages in order."""
    set_document(window, DOCUMENT)
    generate_at(qtbot, window, FIRST_PARAGRAPH_END)
    # The random-weight model writes the same text for the same seed whatever the prompt.
    window.parameters_panel.seed_box.setText("12")
    generate_at(qtbot, window, utf16_length(document_text(window.editor.document())))
    first, second = window.review.marks.passages()
    assert passage_text(window, first) != passage_text(window, second)
    return first, second


def answer_unreviewed(
    monkeypatch: pytest.MonkeyPatch, window: MainWindow, answers: list[UnreviewedChoice]
) -> list[tuple[int, str]]:
    """Answer the unreviewed-passages question from `answers` and return the questions asked."""
    asked: list[tuple[int, str]] = []

    def answer(count: int, verb: str) -> UnreviewedChoice:
        asked.append((count, verb))
        return answers.pop(0)

    monkeypatch.setattr(window.review, "ask_unreviewed", answer)
    return asked


def choose_save_file(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", staticmethod(lambda *_args: (str(path), ""))
    )


def test_completion_marked_and_recorded(qtbot: QtBot, window: MainWindow) -> None:
    set_document(window, DOCUMENT)
    result = generate_at(qtbot, window, utf16_length(DOCUMENT))

    [passage] = window.review.marks.passages()
    inserted = to_document_newlines(result.text)
    assert passage.start == utf16_length(DOCUMENT)
    assert passage.end == passage.start + utf16_length(inserted)
    assert passage_text(window, passage) == inserted
    assert highlighted_ranges(window) == [(passage.start, passage.end)]
    assert len(window.review.margin.bar_rects()) == 1
    assert "1 unreviewed generated passage" in window.review.margin.accessibleDescription()
    assert window.review.margin.accessibleName() == "Review marks"

    label = window.review.counter_label
    assert label.text() == "1 unreviewed passage"
    assert label.accessibleName() == "Unreviewed generated passages"
    assert label.isVisible()
    words = len(result.text.split())
    assert window.editor.accessibleDescription() == f"Completion ready, {words} words"

    record = passage.record
    loaded = window.controller.model
    assert loaded is not None
    assert record.model.name == loaded.name
    assert record.model.device == "cpu"
    assert record.model.dtype == "float32"
    assert record.model.precision == "Exact"
    assert record.sampling["max_new_tokens"] == 24
    assert record.seed == result.seed == 11
    assert record.prompt is not None
    assert record.prompt.token_ids == list(result.prompt.ids)
    assert record.prompt.text == DOCUMENT[result.prompt.start :]
    assert record.text == result.text
    assert record.token_ids == result.token_ids
    assert record.stop_reason == result.stop_reason
    assert not record.reviewed
    assert record.reviewed_at is None


def test_navigation_between_passages(qtbot: QtBot, window: MainWindow) -> None:
    first, second = two_passages(qtbot, window)
    assert window.review.counter_label.text() == "2 unreviewed passages"
    assert highlighted_ranges(window) == [
        (first.start, first.end),
        (second.start, second.end),
    ]
    window.activateWindow()
    move_cursor(window, 0)

    qtbot.keyClick(window.editor, Qt.Key.Key_F8)
    assert selected_range(window) == (first.start, first.end)
    assert window.editor.textCursor().position() == first.start  # scrolled to its start
    qtbot.keyClick(window.editor, Qt.Key.Key_F8)
    assert selected_range(window) == (second.start, second.end)
    qtbot.keyClick(window.editor, Qt.Key.Key_F8)
    assert selected_range(window) == (first.start, first.end)
    assert "continued" in window.statusBar().currentMessage()

    qtbot.keyClick(window.editor, Qt.Key.Key_F8, Qt.KeyboardModifier.ShiftModifier)
    assert selected_range(window) == (second.start, second.end)
    qtbot.keyClick(window.editor, Qt.Key.Key_F8, Qt.KeyboardModifier.ShiftModifier)
    assert selected_range(window) == (first.start, first.end)

    margin = window.review.margin
    rect, clicked = margin.bar_rects()[1]
    assert clicked is second
    qtbot.mouseClick(margin, Qt.MouseButton.LeftButton, pos=rect.center())
    assert selected_range(window) == (second.start, second.end)

    hover = QHelpEvent(QEvent.Type.ToolTip, rect.center(), margin.mapToGlobal(rect.center()))
    QApplication.sendEvent(margin, hover)
    assert QToolTip.text().startswith("Generated text on line")
    assert "not reviewed" in QToolTip.text()


@pytest.mark.parametrize(
    ("button", "expected"),
    [
        ("Save Anyway", UnreviewedChoice.PROCEED),
        ("Review First", UnreviewedChoice.REVIEW_FIRST),
        ("Cancel", UnreviewedChoice.CANCEL),
    ],
)
def test_unreviewed_question_buttons(qtbot: QtBot, button: str, expected: UnreviewedChoice) -> None:
    window = make_window(qtbot)
    seen: list[str] = []

    def click() -> None:
        box = QApplication.activeModalWidget()
        assert isinstance(box, QMessageBox)
        seen.append(box.text())
        for candidate in box.buttons():
            if candidate.text().replace("&", "") == button:
                candidate.click()

    QTimer.singleShot(0, click)
    assert window.review.ask_unreviewed(2, "Save") == expected
    assert seen == ["This document has 2 unreviewed generated passages."]
    window.controller.shutdown()


def test_mark_reviewed_updates_counter(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two_passages(qtbot, window)
    window.activateWindow()
    move_cursor(window, first.start + 2)
    modifiers = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(window.editor, Qt.Key.Key_R, modifiers)

    assert first.record.reviewed
    assert first.record.reviewed_at is not None
    assert not second.record.reviewed
    assert window.review.counter_label.text() == "1 unreviewed passage"
    assert highlighted_ranges(window) == [(second.start, second.end)]
    assert [passage for _rect, passage in window.review.margin.bar_rects()] == [second]
    assert window.review.marks.passages() == [first, second]  # still tracked for its record

    confirmations = [False, True]
    monkeypatch.setattr(window.review, "confirm_mark_all", lambda _count: confirmations.pop(0))
    window.review.mark_all_action.trigger()
    assert not second.record.reviewed
    window.review.mark_all_action.trigger()
    assert second.record.reviewed
    assert window.review.counter_label.text() == "All generated text reviewed"
    assert highlighted_ranges(window) == []
    assert not window.review.next_action.isEnabled()
    assert not window.review.mark_action.isEnabled()


def test_edits_keep_passage_boundaries(qtbot: QtBot, window: MainWindow) -> None:
    set_document(window, DOCUMENT)
    result = generate_at(qtbot, window, utf16_length(DOCUMENT))
    [passage] = window.review.marks.passages()
    generated = to_document_newlines(result.text)
    start, end = passage.start, passage.end

    move_cursor(window, end)
    qtbot.keyClicks(window.editor, " Own words.")
    assert (passage.start, passage.end) == (start, end), "text typed after stays outside"
    move_cursor(window, start)
    qtbot.keyClicks(window.editor, "Lead ")
    assert (passage.start, passage.end) == (start + 5, end + 5), "text typed before stays outside"
    assert passage_text(window, passage) == generated

    move_cursor(window, passage.start + 1)
    qtbot.keyClicks(window.editor, "EDIT")
    assert passage.end == end + 9, "text typed inside joins the passage"
    assert passage_text(window, passage) == generated[:1] + "EDIT" + generated[1:]
    assert window.review.counter_label.text() == "1 unreviewed passage"

    cursor = window.editor.textCursor()
    cursor.setPosition(passage.start)
    cursor.setPosition(passage.start + 1, QTextCursor.MoveMode.KeepAnchor)
    window.editor.setTextCursor(cursor)
    qtbot.keyClicks(window.editor, "Q")  # typed over the passage's first character
    assert passage.start == start + 5, "text typed over the start joins the passage"
    assert passage_text(window, passage) == "QEDIT" + generated[1:]
    edited = passage_text(window, passage)

    whole = QTextCursor(window.editor.document())
    whole.select(QTextCursor.SelectionType.Document)
    bold = QTextCharFormat()
    bold.setFontWeight(QFont.Weight.Bold)
    whole.mergeCharFormat(bold)  # changes formats only, so the passage stays as it is
    assert window.review.marks.passages() == [passage]
    assert passage_text(window, passage) == edited

    cursor = window.editor.textCursor()
    cursor.setPosition(passage.start)
    cursor.setPosition(passage.end, QTextCursor.MoveMode.KeepAnchor)
    window.editor.setTextCursor(cursor)
    qtbot.keyClick(window.editor, Qt.Key.Key_Delete)
    assert window.review.marks.passages() == []
    assert not window.review.counter_label.isVisible()
    assert highlighted_ranges(window) == []

    window.undo()  # brings the deleted text back, and its mark with it
    assert window.review.marks.passages() == [passage]
    assert passage_text(window, passage) == edited
    assert window.review.counter_label.text() == "1 unreviewed passage"


def test_undo_redo_completion_mark(qtbot: QtBot, window: MainWindow) -> None:
    set_document(window, DOCUMENT)
    window.editor.document().clearUndoRedoStacks()
    result = generate_at(qtbot, window, FIRST_PARAGRAPH_END)
    [passage] = window.review.marks.passages()
    window.review.marks.mark_reviewed(passage)

    window.undo()
    assert document_text(window.editor.document()) == DOCUMENT
    assert window.review.marks.passages() == []
    window.redo_action.trigger()
    assert window.review.marks.passages() == [passage]
    assert passage_text(window, passage) == to_document_newlines(result.text)
    assert passage.record.reviewed, "the review state comes back with the passage"


def test_consecutive_completions_stay_apart(qtbot: QtBot, window: MainWindow) -> None:
    set_document(window, DOCUMENT)
    first = generate_at(qtbot, window, utf16_length(DOCUMENT))
    assert window.editor.textCursor().position() == utf16_length(
        document_text(window.editor.document())
    )
    window.generate()  # again at the cursor, right after the first completion
    qtbot.waitUntil(lambda: not window.controller.is_generating, timeout=60_000)
    passages = window.review.marks.passages()
    assert len(passages) == 2
    assert passage_text(window, passages[0]) == to_document_newlines(first.text)
    assert passages[0].end == passages[1].start


def test_marks_survive_save_and_reopen(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Characters outside the Basic Multilingual Plane make Qt's positions differ from the file's.
    set_document(window, TRICKY_TEXT + "\n\n" + DOCUMENT)
    paragraph_end = utf16_length(TRICKY_TEXT + "\n\n") + FIRST_PARAGRAPH_END
    generate_at(qtbot, window, paragraph_end)
    window.parameters_panel.seed_box.setText("12")
    generate_at(qtbot, window, utf16_length(document_text(window.editor.document())))
    first, second = window.review.marks.passages()
    window.review.marks.mark_reviewed(second)
    first_text, second_text = passage_text(window, first), passage_text(window, second)

    move_cursor(window, 0)
    qtbot.keyClicks(window.editor, "WHEREAS ")  # an edit before both passages
    window.editor.insertPlainText("🙂 ")  # QTest cannot type characters outside the BMP
    path = tmp_path / "contract.txt"
    choose_save_file(monkeypatch, path)
    asked = answer_unreviewed(monkeypatch, window, [UnreviewedChoice.PROCEED])
    assert window.save()
    assert asked == [(1, "Save")]

    saved_text = path.read_text(encoding="utf-8")
    sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert [item["text"] for item in sidecar["passages"]] == [first_text, second_text]
    for item in sidecar["passages"]:
        assert saved_text[item["start"] : item["end"]] == item["text"]
    assert sidecar["document"]["sha256"] == hashlib.sha256(saved_text.encode()).hexdigest()

    reopened = make_window(qtbot)
    assert reopened.open_document(path)
    assert document_text(reopened.editor.document()) == saved_text
    again_first, again_second = reopened.review.marks.passages()
    assert (again_first.start, again_first.end) == (first.start, first.end)
    assert (again_second.start, again_second.end) == (second.start, second.end)
    assert passage_text(reopened, again_first) == first_text
    assert again_first.record.id == first.record.id
    assert again_first.record.prompt == first.record.prompt
    assert not again_first.record.reviewed
    assert again_second.record.reviewed
    assert again_second.record.reviewed_at == second.record.reviewed_at
    assert reopened.review.counter_label.text() == "1 unreviewed passage"
    assert highlighted_ranges(reopened) == [(again_first.start, again_first.end)]
    assert not reopened.message_bar.isVisible()
    reopened.controller.shutdown()


def test_outside_edit_reported_on_open(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two_passages(qtbot, window)
    first_text, second_text = passage_text(window, first), passage_text(window, second)
    lost_id = second.record.id
    path = tmp_path / "contract.txt"
    answer_unreviewed(monkeypatch, window, [UnreviewedChoice.PROCEED])
    choose_save_file(monkeypatch, path)
    assert window.save()

    # Another editor adds a preamble and deletes the second passage.
    edited = "AMENDED AND RESTATED.\n\n" + path.read_text(encoding="utf-8").replace(second_text, "")
    path.write_text(edited, encoding="utf-8")

    reopened = make_window(qtbot)
    assert reopened.open_document(path)
    assert document_text(reopened.editor.document()) == edited
    [found] = reopened.review.marks.passages()
    assert found.record.id == first.record.id
    assert passage_text(reopened, found) == first_text
    message = reopened.message_bar.label.text()
    assert "changed outside kl3m-desk" in message
    assert "1 generated passage could not be found" in message
    assert [record.id for record in reopened.review.marks.unplaced] == [lost_id]

    answer_unreviewed(monkeypatch, reopened, [UnreviewedChoice.PROCEED])
    assert reopened.save()
    sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert [item["record"]["id"] for item in sidecar["passages"]] == [first.record.id]
    assert [item["id"] for item in sidecar["unplaced"]] == [lost_id]
    reopened.controller.shutdown()


def test_invalid_sidecar_keeps_document(qtbot: QtBot, tmp_path: Path) -> None:
    window = make_window(qtbot)
    path = tmp_path / "contract.txt"
    path.write_text(DOCUMENT, encoding="utf-8")
    sidecar_path(path).write_text("{not json", encoding="utf-8")

    assert window.open_document(path)
    assert document_text(window.editor.document()) == DOCUMENT
    assert window.review.marks.passages() == []
    assert "not valid JSON" in window.message_bar.label.text()
    assert not sidecar_path(path).exists()
    assert len(list(tmp_path.glob("contract.txt.kl3m.json.invalid-*"))) == 1
    window.controller.shutdown()


def test_document_without_passages_no_sidecar(qtbot: QtBot, tmp_path: Path) -> None:
    window = make_window(qtbot)
    path = tmp_path / "plain.txt"
    set_document(window, DOCUMENT)
    assert window.save_to(path)
    assert path.read_text(encoding="utf-8") == DOCUMENT
    assert not sidecar_path(path).exists()
    window.controller.shutdown()


def test_exported_record_reproduces_text(
    qtbot: QtBot,
    tiny_model_dir: Path,
    tiny_model: LoadedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    window = make_window(qtbot, max_new_tokens=24, temperature=0.9)
    window.parameters_panel.seed_box.setText("")  # a random seed, known only from the record
    window.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: window.controller.model is not None, timeout=30_000)
    set_document(window, DOCUMENT)
    result = generate_at(qtbot, window, FIRST_PARAGRAPH_END)
    assert window.review.marks.passages()[0].record.sampling["seed"] is None

    exported = tmp_path / "records.json"
    choose_save_file(monkeypatch, exported)
    asked = answer_unreviewed(monkeypatch, window, [UnreviewedChoice.PROCEED])
    assert window.review.export_records()
    assert asked == [(1, "Export")]

    [record] = load_records(exported)
    weights = tiny_model_dir / "model.safetensors"
    assert record.model.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record.model.dtype == tiny_model.dtype_name
    assert record.model.precision == tiny_model.precision
    assert record.seed == result.seed
    assert record.prompt is not None
    prompt = record.prompt.to_prompt()
    assert prompt.ids == result.prompt.ids

    reproduced = stream_completion(tiny_model, prompt, record.sampling_params(), lambda _: None)
    assert reproduced.text == record.text
    assert reproduced.token_ids == record.token_ids
    window.controller.shutdown()


def test_save_asks_about_unreviewed(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_document(window, DOCUMENT)
    generate_at(qtbot, window, FIRST_PARAGRAPH_END)
    [passage] = window.review.marks.passages()
    path = tmp_path / "contract.txt"
    choose_save_file(monkeypatch, path)
    answers: list[UnreviewedChoice] = []
    asked = answer_unreviewed(monkeypatch, window, answers)

    answers.append(UnreviewedChoice.CANCEL)
    assert not window.save()
    assert not path.exists()

    move_cursor(window, 0)
    answers.append(UnreviewedChoice.REVIEW_FIRST)
    assert not window.save()
    assert not path.exists()
    assert selected_range(window) == (passage.start, passage.end)

    answers.append(UnreviewedChoice.PROCEED)
    assert window.save()
    assert path.is_file()
    assert sidecar_path(path).is_file()
    assert asked == [(1, "Save")] * 3

    answers.append(UnreviewedChoice.CANCEL)
    assert not window.review.export_records()
    assert asked[-1] == (1, "Export")

    window.review.marks.mark_reviewed(passage)
    assert window.save()
    assert len(asked) == 4, "no question once every passage is reviewed"


def test_stopped_run_keeps_mark(qtbot: QtBot, window: MainWindow) -> None:
    assert window.controller.model is not None
    hook_engine(window.controller.model, before=lambda: time.sleep(0.03))
    set_document(window, DOCUMENT)
    window.parameters_panel.row("max_new_tokens").set_value(300)
    pieces: list[str] = []
    window.controller.text_ready.connect(pieces.append)
    window.generate()
    qtbot.waitUntil(lambda: len(pieces) >= 3, timeout=30_000)
    window.stop()

    [passage] = window.review.marks.passages()
    qtbot.waitUntil(lambda: passage.record.stop_reason == "stopped", timeout=30_000)
    assert passage.record.text == "".join(pieces)
    assert passage_text(window, passage) == to_document_newlines("".join(pieces))
    assert passage.record.seed == 11
    assert window.review.counter_label.text() == "1 unreviewed passage"


def test_deleted_while_streaming_remarked(qtbot: QtBot, window: MainWindow) -> None:
    assert window.controller.model is not None
    hook_engine(window.controller.model, before=lambda: time.sleep(0.03))
    set_document(window, DOCUMENT)
    window.parameters_panel.row("max_new_tokens").set_value(60)
    pieces: list[str] = []
    window.controller.text_ready.connect(pieces.append)
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000):
        window.generate()
        qtbot.waitUntil(lambda: len(pieces) >= 3, timeout=30_000)
        assert window.controller.is_generating, "the completion ended before the deletion"
        [streaming] = window.review.marks.passages()
        cursor = window.editor.textCursor()
        cursor.setPosition(streaming.start)
        cursor.setPosition(streaming.end, QTextCursor.MoveMode.KeepAnchor)
        window.editor.setTextCursor(cursor)
        qtbot.keyClick(window.editor, Qt.Key.Key_Delete)
        deleted_pieces = len(pieces)

    assert len(pieces) > deleted_pieces, "no text arrived after the deletion"
    [passage] = window.review.marks.passages()
    assert passage is streaming
    assert passage.start == utf16_length(DOCUMENT)
    assert passage_text(window, passage) == document_text(window.editor.document())[len(DOCUMENT) :]
    assert passage_text(window, passage) == to_document_newlines("".join(pieces[deleted_pieces:]))
