"""The document editor and the insertion of streamed text into it."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtGui import (
    QContextMenuEvent,
    QKeyEvent,
    QKeySequence,
    QPainter,
    QPaintEvent,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
)
from PySide6.QtWidgets import QPlainTextEdit, QWidget

# QTextDocument stores paragraph breaks as U+2029; U+2028 is a line break inside a paragraph.
_PARAGRAPH_SEPARATOR = "\u2029"
_LINE_SEPARATOR = "\u2028"


def to_plain(raw: str) -> str:
    """Convert QTextDocument raw text to plain text with "\\n" line breaks.

    Unlike `QTextDocument.toPlainText`, this keeps non-breaking spaces, which legal text uses
    between "§" and its number and inside dates.
    """
    return raw.replace(_PARAGRAPH_SEPARATOR, "\n").replace(_LINE_SEPARATOR, "\n")


def to_document_newlines(text: str) -> str:
    """Return `text` with every line break ("\r\n", "\r", U+2028, U+2029) written as "\n".

    The editor keeps "\n" line breaks only, and a file's own line ending is restored on save.
    """
    return (
        text.replace("\r\n", "\n")
        .replace("\r", "\n")
        .replace(_LINE_SEPARATOR, "\n")
        .replace(_PARAGRAPH_SEPARATOR, "\n")
    )


def document_text(document: QTextDocument) -> str:
    """Return the whole text of `document`, keeping non-breaking spaces."""
    return to_plain(document.toRawText())


def text_before(document: QTextDocument, position: int) -> str:
    """Return the text from the start of `document` up to `position`."""
    cursor = QTextCursor(document)
    cursor.setPosition(position, QTextCursor.MoveMode.KeepAnchor)
    return to_plain(cursor.selectedText())


class DraftEditor(QPlainTextEdit):
    """Plain-text editor that lets the window stop generation before an undo."""

    # The user asked to undo (Ctrl+Z or the context menu); the window stops generation, then undoes.
    undo_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Document")
        self.setTabChangesFocus(False)
        self._overlay_painters: list[Callable[[QPainter], None]] = []

    def setPlainText(self, text: str) -> None:
        """Replace the whole text, with the caret at the start and an empty undo history.

        QPlainTextEdit's own setPlainText clears the QTextDocument, and Qt emits contentsChange
        from inside that clear. Pinned passages and review marks free and create QTextCursors in
        their contentsChange handlers, and doing so during the clear corrupted the heap with Qt
        6.12: glibc's malloc checks aborted the process at a later allocation. Replacing the
        text through a cursor is the ordinary edit path, where handlers may free and create
        cursors, and it took about as long as setPlainText for a 1,000,000-character text.
        """
        document = self.document()
        cursor = QTextCursor(document)
        cursor.beginEditBlock()
        cursor.select(QTextCursor.SelectionType.Document)
        cursor.setCharFormat(QTextCharFormat())
        cursor.insertText(text)
        cursor.endEditBlock()
        document.clearUndoRedoStacks()
        self.setTextCursor(QTextCursor(document))

    def add_overlay_painter(self, paint: Callable[[QPainter], None]) -> None:
        """Have `paint` draw on the viewport after every repaint of the text, on top of it.

        The painter is clipped to the repainted region. What `paint` draws is never part of the
        document.
        """
        self._overlay_painters.append(paint)

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if not self._overlay_painters:
            return
        painter = QPainter(self.viewport())
        painter.setClipRegion(event.region())
        for paint in self._overlay_painters:
            paint(painter)
        painter.end()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.matches(QKeySequence.StandardKey.Undo):
            event.accept()
            self.undo_requested.emit()
            return
        super().keyPressEvent(event)

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        menu = self.createStandardContextMenu(event.pos())
        for action in menu.actions():
            if action.objectName() == "edit-undo":
                action.triggered.disconnect()
                action.triggered.connect(self.undo_requested.emit)
        menu.exec(event.globalPos())
        menu.deleteLater()


class StreamInsertion:
    """Inserts the pieces of one completion at a position that follows later edits.

    The position is held by a QTextCursor of its own, which Qt moves when the user edits text
    before it, so the user's own cursor is never moved to insert. Consecutive pieces join one undo
    step. When the user edits the document between two pieces, the next piece starts a new undo
    step, so one undo never takes the user's own typing with it.
    """

    def __init__(self, document: QTextDocument, position: int) -> None:
        self._document = document
        self._cursor = QTextCursor(document)
        self._cursor.setPosition(position)
        self.start = position
        self.inserting = False  # True while this insertion's own text enters the document
        self._state_after_last_insert: tuple[int, int] | None = None
        # A piece that ends in "\r" may be half of "\r\n", so the "\r" waits for the next piece.
        self._pending_return = ""

    @property
    def position(self) -> int:
        """Position right after the text inserted so far."""
        return self._cursor.position()

    def insert(self, text: str) -> None:
        """Insert `text` at the insertion point as part of this completion's undo step.

        Line breaks are written as "\n", as `to_document_newlines` does for the whole text.
        """
        text = self._pending_return + text
        self._pending_return = ""
        if text.endswith("\r"):
            text, self._pending_return = text[:-1], "\r"
        text = to_document_newlines(text)
        if text:
            self._insert_now(text)

    def is_inside(self, position: int) -> bool:
        """Return True when `position` lies in the text inserted so far or at its ends."""
        return self.start <= position <= self.position

    def finish(self) -> None:
        """Insert a "\r" still held back as a line break; call when the completion ends."""
        if self._pending_return:
            self._pending_return = ""
            self._insert_now("\n")

    def _insert_now(self, text: str) -> None:
        state = (self._document.availableUndoSteps(), self._document.revision())
        # Qt emits contentsChange when the edit block ends, so the flag covers that too.
        self.inserting = True
        try:
            if state == self._state_after_last_insert:
                self._cursor.joinPreviousEditBlock()
            else:
                self._cursor.beginEditBlock()
            self._cursor.insertText(text)
            self._cursor.endEditBlock()
        finally:
            self.inserting = False
        self._state_after_last_insert = (
            self._document.availableUndoSteps(),
            self._document.revision(),
        )
