"""Streaming into a long document reads no more of it than streaming into a short one.

The guard counts work instead of timing it: every Python call that copies text out of the
document or searches it is counted, with the characters it returns, while a forced completion
streams through the real window. The counts must not depend on the document's length.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PySide6.QtGui import QTextCursor, QTextDocument
from pytestqt.qtbot import QtBot

from kl3m_desk.review import OffsetMap
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.inference import InferenceController
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from tests.conftest import DOCUMENTS_DIR, requires_fixtures, requires_tokenizer
from tests.forced_text import force_text

COMPLETION = (
    " The Supplier shall provide the Services in accordance with the Service Levels set out in "
    "Schedule 2, and shall notify the Customer promptly of any failure to meet them."
)
SHORT_LENGTH = 2_000
LONG_LENGTH = 300_000


@dataclass
class ReadCounter:
    """Counts the document reads made from Python while `active` is set.

    `active` is set from the first to the last slot of `text_ready`, so the counts cover the
    work each streamed piece does synchronously, in the window and in every slot its edit
    triggers.
    """

    active: bool = False
    calls: Counter[str] = field(default_factory=Counter)
    characters: int = 0
    pieces: int = 0

    def wrap(self, owner: type, name: str) -> Callable[..., object]:
        original = getattr(owner, name)

        def counted(*args: object, **kwargs: object) -> object:
            result = original(*args, **kwargs)
            if self.active:
                self.calls[f"{owner.__name__}.{name}"] += 1
                if isinstance(result, str):
                    self.characters += len(result)
            return result

        return counted

    def piece_arrived(self, _piece: str) -> None:
        self.active = True
        self.pieces += 1

    def piece_inserted(self, _piece: str) -> None:
        self.active = False


@pytest.fixture(autouse=True)
def discard_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer "Discard" to the unsaved-changes question, which would block a test run."""
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)


def install_counters(patches: pytest.MonkeyPatch, reads: ReadCounter) -> None:
    """Count calls that copy or search the document's text, and the OffsetMaps built."""
    for owner, name in (
        (QTextDocument, "toRawText"),
        (QTextDocument, "toPlainText"),
        (QTextDocument, "find"),
        (QTextCursor, "selectedText"),
    ):
        patches.setattr(owner, name, reads.wrap(owner, name))
    original_init = OffsetMap.__init__

    def counted_init(self: OffsetMap, text: str) -> None:
        if reads.active:
            reads.calls["OffsetMap"] += 1
            reads.characters += len(text)
        original_init(self, text)

    patches.setattr(OffsetMap, "__init__", counted_init)


def long_agreement(length: int) -> str:
    source = (DOCUMENTS_DIR / "outsourcing_agreement_long.txt").read_text(encoding="utf-8")
    return ((source.rstrip("\n") + "\n\n") * (length // len(source) + 1))[:length]


def stream_reads(
    qtbot: QtBot,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    counter: ReadCounter,
    text: str,
    position: int,
    tmp_path: Path,
) -> ReadCounter:
    """Open `text`, show the context view, and stream the completion at `position`."""
    controller = InferenceController()
    controller.text_ready.connect(counter.piece_arrived)  # runs before the window's slots
    settings = Settings.load()
    settings.limitations_shown = True
    settings.sampling = settings.sampling.replace(max_new_tokens=32, temperature=0.0)
    window = MainWindow(settings, load_library(), controller)
    controller.text_ready.connect(counter.piece_inserted)  # runs after the window's slots
    qtbot.addWidget(window)
    window.show()
    window.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: controller.model is not None, timeout=30_000)
    force_text(monkeypatch, controller.model, COMPLETION)

    document = tmp_path / f"agreement {len(text)}.txt"
    document.write_text(text, encoding="utf-8")
    assert window.open_document(document, ask=False)
    window.context_view.show_action.setChecked(True)
    cursor = window.editor.textCursor()
    cursor.setPosition(len(text) // 10)
    cursor.setPosition(len(text) // 10 + 40, QTextCursor.MoveMode.KeepAnchor)
    window.editor.setTextCursor(cursor)
    window.context_view.toggle_pin()  # a pinned passage, tracked through every insertion
    cursor.setPosition(position)
    window.editor.setTextCursor(cursor)

    with qtbot.waitSignal(controller.generation_finished, timeout=60_000):
        window.generate()
    assert counter.pieces > 10
    window.editor.document().setModified(False)
    window.close()
    return counter


@requires_tokenizer
@requires_fixtures
@pytest.mark.parametrize("where", ["end", "middle"])
def test_streaming_reads_independent_of_length(
    qtbot: QtBot,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    where: str,
) -> None:
    figures = []
    for length in (SHORT_LENGTH, LONG_LENGTH):
        text = long_agreement(length)
        position = len(text) if where == "end" else len(text) // 2
        with monkeypatch.context() as patches:
            reads = ReadCounter()
            install_counters(patches, reads)
            stream_reads(qtbot, tiny_model_dir, patches, reads, text, position, tmp_path)
        figures.append(reads)

    short, long = figures
    assert long.pieces == short.pieces
    assert long.calls == short.calls
    # The passage read after each piece grows with the completion and may differ by the few
    # characters around the insertion point, but never by the 298,000 characters that the long
    # document adds.
    assert abs(long.characters - short.characters) <= len(COMPLETION)
    assert long.characters < 40 * len(COMPLETION)


@requires_fixtures
@pytest.mark.parametrize("where", ["end", "middle"])
def test_typing_reads_independent_of_length(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    figures = []
    for length in (SHORT_LENGTH, LONG_LENGTH):
        text = long_agreement(length)
        settings = Settings.load()
        settings.limitations_shown = True
        window = MainWindow(settings, load_library())
        qtbot.addWidget(window)
        window.show()
        document = tmp_path / f"agreement {length}.txt"
        document.write_text(text, encoding="utf-8")
        assert window.open_document(document, ask=False)
        window.context_view.show_action.setChecked(True)
        cursor = window.editor.textCursor()
        cursor.setPosition(len(text) if where == "end" else len(text) // 2)
        window.editor.setTextCursor(cursor)
        qtbot.wait(400)  # let the context view's pending refresh run before counting

        with monkeypatch.context() as patches:
            reads = ReadCounter()
            install_counters(patches, reads)
            reads.active = True
            qtbot.keyClicks(window.editor, " the Customer shall")
            reads.active = False
        figures.append(reads)
        window.editor.document().setModified(False)
        window.close()

    short, long = figures
    assert long.calls == short.calls
    assert long.characters == short.characters
