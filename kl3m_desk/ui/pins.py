"""Pinned passages in the editor, tracked through edits and highlighted.

A pinned passage is text that every prompt contains wherever the cursor is (see
kl3m_desk.context). `PinnedPassages` keeps each one between two QTextCursors of its own, as review
marks do (see kl3m_desk.ui.review_marks), so Qt moves them when text changes before or inside the
passage:

- Text typed inside a pinned passage becomes part of it.
- Text typed right before or right after it stays outside. Qt moves a cursor along with text
  inserted at its position, so after an insertion at the passage's end the end cursor is put back.
- A passage whose text is removed entirely is unpinned. Undo brings the text back unpinned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QColor, QTextCursor, QTextDocument
from PySide6.QtWidgets import QPlainTextEdit

from kl3m_desk.context import PinnedPassage
from kl3m_desk.review import OffsetMap
from kl3m_desk.ui.editor import document_text, to_plain
from kl3m_desk.ui.highlights import PINS_LAYER, HighlightLayers, background_selection

# Amber, translucent: distinct from the palette's highlight colour that review marks use.
PIN_COLOR = QColor(255, 183, 0, 72)


@dataclass
class TrackedPin:
    """A pinned passage in the editor's document, in Qt positions (UTF-16 code units)."""

    start_cursor: QTextCursor
    end_cursor: QTextCursor
    last_end: int  # the end after the last change, to compare with the next one

    @property
    def start(self) -> int:
        """Position of the passage's first character."""
        return self.start_cursor.position()

    @property
    def end(self) -> int:
        """Position right after the passage's last character."""
        return self.end_cursor.position()


class PinnedPassages(QObject):
    """The pinned passages of the editor's document. Call every method from the GUI thread."""

    # Passages were pinned or unpinned, or their positions changed.
    changed = Signal()

    def __init__(self, editor: QPlainTextEdit) -> None:
        super().__init__(editor)
        self.editor = editor
        self._pins: list[TrackedPin] = []
        editor.document().contentsChange.connect(self._contents_changed)

    @property
    def document(self) -> QTextDocument:
        """The editor's document."""
        return self.editor.document()

    def pins(self) -> list[TrackedPin]:
        """Return the pinned passages in document order."""
        return sorted(self._pins, key=lambda pin: pin.start)

    def pin(self, start: int, end: int) -> TrackedPin:
        """Pin the text between positions `start` and `end` and return the passage.

        Pinned passages that overlap or touch that text are joined into the new one. Raises
        ValueError for an empty range.
        """
        start, end = min(start, end), max(start, end)
        if start == end:
            raise ValueError(f"Nothing to pin between positions {start} and {end}.")
        for pin in list(self._pins):
            if pin.start <= end and start <= pin.end:
                start, end = min(start, pin.start), max(end, pin.end)
                self._pins.remove(pin)
        tracked = TrackedPin(self._cursor_at(start), self._cursor_at(end), end)
        self._pins.append(tracked)
        self._refresh()
        return tracked

    def unpin(self, pin: TrackedPin) -> None:
        """Unpin `pin`."""
        if pin in self._pins:
            self._pins.remove(pin)
            self._refresh()

    def clear(self) -> int:
        """Unpin every passage and return how many there were."""
        count = len(self._pins)
        self._pins.clear()
        self._refresh()
        return count

    def pin_at(self, position: int) -> TrackedPin | None:
        """Return the passage that contains `position` or ends right at it."""
        for pin in self.pins():
            if pin.start <= position <= pin.end:
                return pin
        return None

    def pin_containing(self, start: int, end: int) -> TrackedPin | None:
        """Return the passage that contains all of the range from `start` to `end`."""
        for pin in self._pins:
            if pin.start <= start and end <= pin.end:
                return pin
        return None

    def text_of(self, pin: TrackedPin) -> str:
        """Return the text of `pin`, with "\\n" line breaks."""
        cursor = QTextCursor(self.document)
        cursor.setPosition(pin.start)
        cursor.setPosition(pin.end, QTextCursor.MoveMode.KeepAnchor)
        return to_plain(cursor.selectedText())

    def describe(self, pin: TrackedPin) -> str:
        """Return where `pin` is and how long it is, for messages."""
        first = self.document.findBlock(pin.start).blockNumber() + 1
        last = self.document.findBlock(max(pin.start, pin.end - 1)).blockNumber() + 1
        lines = f"line {first}" if first == last else f"lines {first} to {last}"
        return f"{lines} ({len(self.text_of(pin)):,} characters)"

    # --- the passages as prompts and records files take them -------------------------------

    def snapshot(
        self, text: str | None = None, offsets: OffsetMap | None = None
    ) -> tuple[PinnedPassage, ...]:
        """Return the pinned passages with code point offsets in the document text.

        `text` and `offsets` are the document's text and its OffsetMap when the caller has them
        already; otherwise they are read from the document.
        """
        if not self._pins:
            return ()
        if text is None:
            text = document_text(self.document)
        if offsets is None:
            offsets = OffsetMap(text)
        passages = []
        for pin in self.pins():
            start = offsets.to_code_point(pin.start)
            end = offsets.to_code_point(pin.end)
            passages.append(PinnedPassage(start, text[start:end]))
        return tuple(passages)

    def load(self, passages: Sequence[PinnedPassage]) -> None:
        """Replace the pinned passages with `passages`, in code point offsets of the text."""
        self._pins.clear()
        offsets = OffsetMap(document_text(self.document))
        for passage in passages:
            start = offsets.to_utf16(passage.start)
            end = offsets.to_utf16(passage.end)
            if start < end:
                self._pins.append(TrackedPin(self._cursor_at(start), self._cursor_at(end), end))
        self._refresh()

    # --- following edits --------------------------------------------------------------------

    def _contents_changed(self, position: int, _removed: int, added: int) -> None:
        if not self._pins:
            return
        for pin in list(self._pins):
            if added > 0 and position == pin.last_end:
                # Qt moved the end along with text inserted at it: that text stays outside.
                pin.end_cursor.setPosition(position)
            if pin.start >= pin.end:
                self._pins.remove(pin)
                continue
            pin.last_end = pin.end
        self._refresh()

    def _cursor_at(self, position: int) -> QTextCursor:
        cursor = QTextCursor(self.document)
        cursor.setPosition(position)
        return cursor

    def _refresh(self) -> None:
        selections = [
            background_selection(self.document, pin.start, pin.end, PIN_COLOR)
            for pin in self.pins()
        ]
        HighlightLayers.of(self.editor).set_layer(PINS_LAYER, selections)
        self.changed.emit()
