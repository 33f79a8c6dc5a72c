"""The drafting window, driven through real widgets, a real inference thread and a tiny model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor
from pytestqt.qtbot import QtBot

import kl3m_desk.ui.inference as inference
from kl3m_desk.generation import GenerationResult
from kl3m_desk.params import SamplingParams
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.editor import StreamInsertion, document_text, to_document_newlines
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from kl3m_desk.ui.templates_panel import TemplateFieldsDialog
from tests.conftest import DOCUMENTS_DIR, REPOSITORY, hook_engine, requires_fixtures

TWO_PARAGRAPHS = "First paragraph of the agreement.\n\nSecond paragraph: the Supplier shall "


@pytest.fixture(autouse=True)
def discard_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer "Discard" to the unsaved-changes question, which would block a test run."""
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)


def make_window(qtbot: QtBot, **sampling: object) -> MainWindow:
    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(**sampling)
    settings.limitations_shown = True
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.fixture
def window(qtbot: QtBot, tiny_model_dir: Path) -> Iterator[MainWindow]:
    """A window with the tiny model loaded; its inference thread is ended after the test."""
    created = make_window(qtbot, max_new_tokens=48, seed=11)
    created.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: created.controller.model is not None, timeout=30_000)
    yield created
    created.controller.shutdown()


def slow_down(window: MainWindow, seconds: float = 0.03) -> None:
    """Make each forward pass of the window's model take at least `seconds`."""
    assert window.controller.model is not None

    hook_engine(window.controller.model, before=lambda: time.sleep(seconds))


def set_document(window: MainWindow, text: str, position: int | None = None) -> None:
    window.editor.setPlainText(text)
    cursor = window.editor.textCursor()
    cursor.setPosition(len(text) if position is None else position)
    window.editor.setTextCursor(cursor)


def generate_and_wait(qtbot: QtBot, window: MainWindow) -> GenerationResult:
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000) as blocker:
        window.generate()
    result = blocker.args[0]
    assert isinstance(result, GenerationResult)
    return result


def test_streamed_line_breaks_normalized(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    window.editor.setPlainText("Clause 1.")
    insertion = StreamInsertion(window.editor.document(), len("Clause 1."))
    for piece in (" One\r", "\nTwo\r", "Three\u2028Four\r"):
        insertion.insert(piece)
    assert document_text(window.editor.document()) == "Clause 1. One\nTwo\nThree\nFour"
    insertion.finish()
    assert document_text(window.editor.document()) == "Clause 1. One\nTwo\nThree\nFour\n"
    window.controller.shutdown()


def test_window_shows_before_model_ready(qtbot: QtBot, tiny_model_dir: Path) -> None:
    window = make_window(qtbot)
    assert window.isVisible()
    assert not window.generate_action.isEnabled()
    assert window.first_run.isVisible()
    window.load_model(tiny_model_dir)
    assert window.load_progress.isVisible()
    assert not window.generate_button.isEnabled()
    qtbot.waitUntil(lambda: window.generate_button.isEnabled(), timeout=30_000)
    assert not window.load_progress.isVisible()
    assert window.controller.model is not None
    assert window.model_label.text() == window.controller.model.describe()
    assert window.controller.model.device_reason in window.model_label.toolTip()
    assert window.parameters_panel.row("max_new_tokens").box.maximum() == 1023
    assert Settings.load().last_model_dir == tiny_model_dir
    window.controller.shutdown()


def test_limitations_shown_once(qtbot: QtBot, tiny_model_dir: Path) -> None:
    settings = Settings.load()
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    window.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: window.controller.model is not None, timeout=30_000)
    assert any("not legal advice" in text for text in window.message_bar.messages())
    assert Settings.load().limitations_shown
    window.controller.shutdown()

    again = MainWindow(Settings.load(), load_library())
    qtbot.addWidget(again)
    again.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: again.controller.model is not None, timeout=30_000)
    assert not any("not legal advice" in text for text in again.message_bar.messages())
    again.controller.shutdown()


def test_missing_model_folder_named(qtbot: QtBot, tmp_path: Path) -> None:
    window = make_window(qtbot)
    missing = tmp_path / "no such model"
    with qtbot.waitSignal(window.controller.load_failed, timeout=10_000):
        window.load_model(missing)
    assert window.message_bar.isVisible()
    assert str(missing) in window.message_bar.label.text()
    assert not window.generate_action.isEnabled()
    window.controller.shutdown()


def test_completion_inserted_at_cursor(qtbot: QtBot, window: MainWindow) -> None:
    position = TWO_PARAGRAPHS.index("\n\n")
    set_document(window, TWO_PARAGRAPHS, position)
    pieces: list[str] = []
    window.controller.text_ready.connect(pieces.append)
    result = generate_and_wait(qtbot, window)
    assert result.text
    assert len(pieces) > 1, "text should arrive piece by piece"
    expected = (
        TWO_PARAGRAPHS[:position] + to_document_newlines(result.text) + TWO_PARAGRAPHS[position:]
    )
    assert document_text(window.editor.document()) == expected
    assert "tokens/s" in window.speed_label.text()
    assert window.context_label.text().startswith("Context:")
    assert window.generate_action.isEnabled()
    assert not window.stop_action.isEnabled()


def test_typing_elsewhere_while_streaming(qtbot: QtBot, window: MainWindow) -> None:
    slow_down(window)
    set_document(window, TWO_PARAGRAPHS)
    window.parameters_panel.row("max_new_tokens").set_value(40)
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000) as blocker:
        window.generate()
        qtbot.waitUntil(
            lambda: len(document_text(window.editor.document())) > len(TWO_PARAGRAPHS) + 3,
            timeout=30_000,
        )
        assert window.controller.is_generating, "the completion ended before the user typed"
        cursor = window.editor.textCursor()
        cursor.setPosition(len("First"))
        window.editor.setTextCursor(cursor)
        qtbot.keyClicks(window.editor, "abc")
        assert window.editor.textCursor().position() == len("Firstabc")
    result = blocker.args[0]
    typed = TWO_PARAGRAPHS.replace("First", "Firstabc", 1)
    assert document_text(window.editor.document()) == typed + to_document_newlines(result.text)
    assert window.editor.textCursor().position() == len("Firstabc")


def test_typing_into_completion_stops_it(qtbot: QtBot, window: MainWindow) -> None:
    slow_down(window)
    set_document(window, TWO_PARAGRAPHS)
    window.parameters_panel.row("max_new_tokens").set_value(300)
    pieces: list[str] = []
    window.controller.text_ready.connect(pieces.append)
    window.generate()
    qtbot.waitUntil(lambda: len(pieces) >= 3, timeout=30_000)
    assert window.controller.is_generating, "the completion ended before the user typed"

    window.editor.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClicks(window.editor, " by hand")

    assert not window.controller.is_generating
    assert "typed where it was being written" in window.statusBar().currentMessage()
    qtbot.wait(300)
    text = document_text(window.editor.document())
    assert text.endswith(" by hand")
    assert text == TWO_PARAGRAPHS + to_document_newlines("".join(pieces)) + " by hand"


def test_stop_ends_streaming(qtbot: QtBot, window: MainWindow) -> None:
    slow_down(window)
    set_document(window, TWO_PARAGRAPHS)
    window.parameters_panel.row("max_new_tokens").set_value(300)
    pieces: list[str] = []
    window.controller.text_ready.connect(pieces.append)
    window.generate()
    qtbot.waitUntil(lambda: len(pieces) >= 3, timeout=30_000)
    qtbot.keyClick(window.editor, Qt.Key.Key_Escape)
    assert not window.controller.is_generating
    assert not window.stop_button.isEnabled()
    after_stop = document_text(window.editor.document())
    count = len(pieces)
    qtbot.wait(400)
    assert document_text(window.editor.document()) == after_stop
    assert len(pieces) == count
    assert after_stop == TWO_PARAGRAPHS + to_document_newlines("".join(pieces))


def test_generate_again_waits_for_old_run(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    active = 0
    max_active = 0
    runs: list[str] = []
    lock = threading.Lock()
    real_stream = inference.stream_completion

    def counting_stream(*args: object, **kwargs: object) -> GenerationResult:
        nonlocal active, max_active
        with lock:
            active += 1
            max_active = max(max_active, active)
            runs.append("start")
        try:
            return real_stream(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                active -= 1
                runs.append("end")

    monkeypatch.setattr(inference, "stream_completion", counting_stream)
    slow_down(window)
    set_document(window, TWO_PARAGRAPHS)
    window.parameters_panel.row("max_new_tokens").set_value(200)
    window.generate()
    qtbot.waitUntil(lambda: runs == ["start"], timeout=30_000)
    window.stop()
    window.generate()  # at once after Stop
    window.generate()  # and once more while that run is still queued
    qtbot.waitUntil(lambda: not window.controller.is_generating, timeout=60_000)
    assert max_active == 1
    assert runs[0::2] == ["start"] * (len(runs) // 2)
    assert runs[1::2] == ["end"] * (len(runs) // 2)


def test_undo_removes_whole_completion(qtbot: QtBot, window: MainWindow) -> None:
    position = TWO_PARAGRAPHS.index("\n\n")
    set_document(window, TWO_PARAGRAPHS, position)
    window.editor.document().clearUndoRedoStacks()
    result = generate_and_wait(qtbot, window)
    assert len(result.text) > 10
    qtbot.keyClick(window.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert document_text(window.editor.document()) == TWO_PARAGRAPHS
    assert window.editor.textCursor().position() == position


def test_undo_while_streaming_stops_first(qtbot: QtBot, window: MainWindow) -> None:
    slow_down(window)
    set_document(window, TWO_PARAGRAPHS)
    window.editor.document().clearUndoRedoStacks()
    window.parameters_panel.row("max_new_tokens").set_value(300)
    window.generate()
    qtbot.waitUntil(
        lambda: len(document_text(window.editor.document())) > len(TWO_PARAGRAPHS) + 5,
        timeout=30_000,
    )
    qtbot.keyClick(window.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not window.controller.is_generating
    assert document_text(window.editor.document()) == TWO_PARAGRAPHS
    qtbot.wait(300)
    assert document_text(window.editor.document()) == TWO_PARAGRAPHS


def test_generation_error_reported_then_next_run_works(qtbot: QtBot, window: MainWindow) -> None:
    assert window.controller.model is not None
    calls = 0

    def fail_after_three_tokens() -> None:
        nonlocal calls
        calls += 1
        if calls == 4:  # the prefill and three decode steps succeed
            raise RuntimeError("injected failure")

    remove = hook_engine(window.controller.model, before=fail_after_three_tokens)
    set_document(window, TWO_PARAGRAPHS)
    with qtbot.waitSignal(window.controller.generation_failed, timeout=30_000) as blocker:
        window.generate()
    remove()
    assert "injected failure" in blocker.args[0]
    assert window.message_bar.isVisible()
    assert "injected failure" in window.message_bar.label.text()
    assert window.generate_action.isEnabled()
    assert not window.stop_action.isEnabled()

    before = document_text(window.editor.document())
    result = generate_and_wait(qtbot, window)
    assert document_text(window.editor.document()) == before + to_document_newlines(result.text)
    assert not window.message_bar.isVisible()


def test_template_inserted_then_continued(qtbot: QtBot, window: MainWindow) -> None:
    template = next(t for t in window.templates_panel.templates() if t.id == "governing_law")
    set_document(window, "1. Definitions.")
    filled = template.fill({"state": "New York"})
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000) as blocker:
        window.insert_template_text(filled)
    result = blocker.args[0]
    text = document_text(window.editor.document())
    assert text == "1. Definitions.\n\n" + filled + to_document_newlines(result.text)
    assert "New York" in text


def test_template_missing_field_named(qtbot: QtBot, window: MainWindow) -> None:
    template = next(t for t in window.templates_panel.templates() if t.id == "indemnification")
    required = [field for field in template.fields if not field.default]
    assert required, "the indemnification template has a field without a default"
    dialog = TemplateFieldsDialog(template, {}, window)
    qtbot.addWidget(dialog)
    dialog.accept()
    assert dialog.result() != TemplateFieldsDialog.DialogCode.Accepted
    assert dialog.error_label.isVisibleTo(dialog)
    assert required[0].label in dialog.error_label.text()


def test_sampling_survives_restart(qtbot: QtBot, window: MainWindow) -> None:
    panel = window.parameters_panel
    panel.row("top_k").set_value(0)
    panel.row("top_p").set_value(0.05)
    panel.row("temperature").set_value(0)
    panel.seed_box.setText("")
    window.editor.document().setModified(False)
    window.close()
    stored = Settings.load().sampling
    assert stored.top_k == 0
    assert stored.top_p == pytest.approx(0.05)
    assert stored.temperature == 0.0
    assert stored.seed is None

    reopened = MainWindow(Settings.load(), load_library())
    qtbot.addWidget(reopened)
    assert reopened.parameters_panel.params() == stored
    reopened.controller.shutdown()


def test_slider_and_box_stay_in_step(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    row = window.parameters_panel.row("temperature")
    row.slider.setValue(150)
    assert row.box.value() == pytest.approx(1.5)
    row.box.setValue(0.25)
    assert row.slider.value() == 25
    assert window.parameters_panel.params().temperature == pytest.approx(0.25)
    window.controller.shutdown()


@requires_fixtures
def test_tricky_file_round_trip(qtbot: QtBot, tmp_path: Path) -> None:
    window = make_window(qtbot)
    path = tmp_path / "tricky copy.txt"
    # The file mixes CRLF and LF lines; a save writes its most common ending, LF, throughout.
    original = (DOCUMENTS_DIR / "tricky.txt").read_bytes().replace(b"\r\n", b"\n")
    path.write_bytes((DOCUMENTS_DIR / "tricky.txt").read_bytes())
    assert window.open_document(path)
    assert "tricky copy.txt" in window.windowTitle()
    assert not window.isWindowModified()
    assert "mixes line endings" in window.statusBar().currentMessage()
    assert window.save()
    assert path.read_bytes() == original

    cursor = window.editor.textCursor()
    cursor.movePosition(QTextCursor.MoveOperation.End)
    window.editor.setTextCursor(cursor)
    qtbot.keyClicks(window.editor, "Added.")
    assert window.isWindowModified()
    assert window.save()
    assert path.read_bytes() == original + b"Added."
    assert not window.isWindowModified()
    window.controller.shutdown()


def test_crlf_file_keeps_crlf(qtbot: QtBot, tmp_path: Path) -> None:
    window = make_window(qtbot)
    path = tmp_path / "crlf.txt"
    original = "Section 1.\u00a0Term.\r\n\tThe term is one year.\r\n".encode()
    path.write_bytes(original)
    assert window.open_document(path)
    assert window.save()
    assert path.read_bytes() == original
    window.controller.shutdown()


def test_unsaved_changes_prompt(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    window = make_window(qtbot)
    qtbot.keyClicks(window.editor, "Draft text")
    answers = [UnsavedChoice.CANCEL]
    monkeypatch.setattr(window, "ask_unsaved_changes", lambda: answers.pop(0))
    window.close()
    assert window.isVisible()
    other = tmp_path / "other.txt"
    other.write_text("Other", encoding="utf-8")
    answers.append(UnsavedChoice.CANCEL)
    assert not window.open_document(other)
    assert document_text(window.editor.document()) == "Draft text"
    answers.append(UnsavedChoice.DISCARD)
    window.close()
    assert not window.isVisible()


def test_non_utf8_file_opened_with_notice(qtbot: QtBot, tmp_path: Path) -> None:
    window = make_window(qtbot)
    path = tmp_path / "latin1.txt"
    path.write_bytes("Caf\xe9 § 2".encode("latin-1"))
    assert window.open_document(path)
    assert document_text(window.editor.document()) == "Caf\xe9 § 2"
    assert "not UTF-8" in window.message_bar.label.text()
    assert "Windows-1252" in window.message_bar.label.text()
    window.controller.shutdown()


def test_binary_file_reported(qtbot: QtBot, tmp_path: Path) -> None:
    window = make_window(qtbot)
    qtbot.keyClicks(window.editor, "Keep me")
    path = tmp_path / "scan.txt"
    path.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    window.editor.document().setModified(False)
    assert not window.open_document(path)
    assert "is a PDF file, not a text document" in window.message_bar.label.text()
    assert document_text(window.editor.document()) == "Keep me"
    window.controller.shutdown()


def test_document_error_survives_model_load(
    qtbot: QtBot, tiny_model_dir: Path, tmp_path: Path
) -> None:
    window = make_window(qtbot)
    path = tmp_path / "scan.txt"
    path.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    window.load_model(tiny_model_dir)
    assert not window.open_document(path, ask=False)
    qtbot.waitUntil(lambda: window.controller.model is not None, timeout=30_000)
    assert window.message_bar.isVisible()
    assert any("not a text document" in text for text in window.message_bar.messages())
    window.controller.shutdown()


def test_failed_load_clears_progress_message(qtbot: QtBot, tmp_path: Path) -> None:
    window = make_window(qtbot)
    with qtbot.waitSignal(window.controller.load_failed, timeout=10_000):
        window.load_model(tmp_path / "absent")
    assert window.statusBar().currentMessage() == "The model could not be loaded"
    window.controller.shutdown()


CLOSE_WHILE_STREAMING = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    from kl3m_desk.params import SamplingParams
    from kl3m_desk.settings import Settings
    from kl3m_desk.templates import load_library
    from kl3m_desk.ui.main_window import MainWindow

    app = QApplication([])
    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(max_new_tokens=900)
    window = MainWindow(settings, load_library())
    window.show()
    pieces = []

    def ready(loaded):
        forward = loaded.engine.forward
        loaded.engine.forward = lambda *args: (time.sleep(0.02), forward(*args))[1]
        window.editor.setPlainText("The Supplier shall ")
        window.editor.moveCursor(window.editor.textCursor().MoveOperation.End)
        window.generate()

    def text(piece):
        pieces.append(piece)
        if len(pieces) == 5:
            window.editor.document().setModified(False)
            window.close()

    window.controller.model_ready.connect(ready)
    window.controller.text_ready.connect(text)
    window.controller.load_failed.connect(lambda message: sys.exit(message))
    window.load_model(Path(sys.argv[1]))
    QTimer.singleShot(60_000, lambda: sys.exit("timed out"))
    status = app.exec()
    print("pieces", len(pieces), "generating", window.controller.is_generating)
    sys.exit(status)
    """
)


def test_close_while_streaming_exits_cleanly(tiny_model_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "close_while_streaming.py"
    script.write_text(CLOSE_WHILE_STREAMING, encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, str(script), str(tiny_model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPOSITORY,
    )
    assert completed.returncode == 0, completed.stderr
    assert "pieces 5" in completed.stdout
    assert "QThread: Destroyed" not in completed.stderr


def test_typing_pause_prefills_prompt(qtbot: QtBot, window: MainWindow) -> None:
    set_document(window, TWO_PARAGRAPHS * 20)
    with qtbot.waitSignal(window.controller.prefilled, timeout=30_000) as blocker:
        qtbot.keyClicks(window.editor, "the Customer")
    computed = blocker.args[0]
    result = generate_and_wait(qtbot, window)
    assert result.prompt.used == computed
    assert result.reused_tokens == computed - 1  # only the last token is computed again

    # Typing on after the completion reuses the prompt and as much of the completion as the
    # document's text tokenizes the same way (the random model writes odd word boundaries).
    assert window.editor.textCursor().position() == len(document_text(window.editor.document()))
    qtbot.keyClicks(window.editor, " and")
    second = generate_and_wait(qtbot, window)
    cached = [*result.prompt.ids, *result.token_ids[:-1]]  # the last token was never fed back
    same = 0
    while same < min(len(cached), second.prompt.used) and cached[same] == second.prompt.ids[same]:
        same += 1
    assert same >= computed - 1  # the completion may join the last word of the prompt
    assert second.reused_tokens == min(same, second.prompt.used - 1)


def test_typing_cancels_pending_prefill(qtbot: QtBot, window: MainWindow) -> None:
    prefills: list[int] = []
    window.controller.prefilled.connect(prefills.append)
    set_document(window, TWO_PARAGRAPHS)
    for letter in "Supplier":
        qtbot.keyClicks(window.editor, letter)
        qtbot.wait(50)  # well under the pause that starts a prefill
    assert prefills == []
    qtbot.waitUntil(lambda: len(prefills) == 1, timeout=30_000)


def test_opened_document_gets_new_window(qtbot: QtBot, window: MainWindow, tmp_path: Path) -> None:
    first = "Recitals. " * 600  # longer than one window, so the window starts past 0
    set_document(window, first)
    result = generate_and_wait(qtbot, window)
    assert result.prompt.start > 0

    other = tmp_path / "other.txt"
    other.write_text("The Supplier shall deliver the Goods. " * 40, encoding="utf-8")
    assert window.open_document(other, ask=False)
    window.editor.moveCursor(window.editor.textCursor().MoveOperation.End)
    second = generate_and_wait(qtbot, window)
    assert second.prompt.start == 0  # the whole short document, not the old window's start
