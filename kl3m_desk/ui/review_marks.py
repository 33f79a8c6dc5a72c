"""Review marks: generated passages tracked in the editor, highlighted until a person reviews them.

`ReviewMarks` follows each generated passage through edits with two QTextCursors, one at its
start and one at its end, which Qt moves when text changes before or inside the passage. On top
of Qt's own rules, these rules decide what belongs to a passage:

- Text typed inside a passage becomes part of it, and the passage stays unreviewed, because a
  person who changes a few words of a generated clause has still not reviewed the rest of it.
- Text typed right before or right after a passage is the person's own and stays outside it.
  So is text typed over a selection that starts at the passage's end. Text typed over a selection
  that starts at the passage's start and ends inside it is a change inside the passage.
- A passage whose text is removed entirely disappears from the list. If exactly its text comes
  back at the same place in one insertion (Undo of the deletion, Redo of the completion, or a
  paste), the passage comes back with its record and review state.

`ReviewMargin` is the strip left of the text that shows a bar beside each unreviewed passage.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QEvent, QObject, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QHelpEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
)
from PySide6.QtWidgets import QPlainTextEdit, QTextEdit, QToolTip, QWidget

from kl3m_desk.fingerprint import WeightFingerprint
from kl3m_desk.generation import GenerationResult, Prompt
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import SamplingParams
from kl3m_desk.review import (
    STOP_FAILED,
    GenerationRecord,
    ModelIdentity,
    OffsetMap,
    PlacedPassage,
    Placement,
    PromptWindow,
    ReviewFile,
    place_passages,
    utf16_length,
)
from kl3m_desk.ui.editor import document_text, to_plain
from kl3m_desk.ui.highlights import REVIEW_LAYER, HighlightLayers

# Passages removed from the text that can still come back through Undo or Redo. The oldest are
# forgotten first.
MAX_REMOVED_PASSAGES = 100


@dataclass
class TrackedPassage:
    """A generated passage in the editor's document.

    Positions are Qt's: UTF-16 code units. While the passage streams in, `start_cursor` is None
    until its first text arrives.
    """

    record: GenerationRecord
    start_cursor: QTextCursor | None = None
    end_cursor: QTextCursor | None = None
    streaming: bool = True
    # Positions and text after the last change, to compare with the next one.
    last_start: int = 0
    last_end: int = 0
    last_text: str = ""

    @property
    def start(self) -> int:
        """Position of the passage's first character."""
        return self.start_cursor.position() if self.start_cursor is not None else 0

    @property
    def end(self) -> int:
        """Position right after the passage's last character."""
        return self.end_cursor.position() if self.end_cursor is not None else 0

    @property
    def placed(self) -> bool:
        """True once the passage has text in the document."""
        return self.start_cursor is not None and self.end_cursor is not None


class ReviewMarks(QObject):
    """The generated passages of the editor's document and their records.

    The window reports each generation's steps (`begin`, `prompt_ready`, `text_inserted`,
    `result_ready`, `end_stream`). Call every method from the GUI thread.
    """

    # The passages, their positions or their review state changed.
    changed = Signal()

    def __init__(self, editor: QPlainTextEdit) -> None:
        super().__init__(editor)
        self.editor = editor
        self._passages: list[TrackedPassage] = []
        self._removed: list[TrackedPassage] = []
        self._unplaced: list[GenerationRecord] = []
        self._current: TrackedPassage | None = None  # the passage of the latest generation
        self._source_text = ""  # text before the cursor given to the latest generation
        self.highlight_color = QColor(editor.palette().highlight().color())
        self.highlight_color.setAlpha(48)
        editor.document().contentsChange.connect(self._contents_changed)

    @property
    def document(self) -> QTextDocument:
        """The editor's document."""
        return self.editor.document()

    # --- passages ---------------------------------------------------------------------------

    @property
    def current_record(self) -> GenerationRecord | None:
        """Record of the latest generation, or None when it ended without inserting text."""
        return self._current.record if self._current is not None else None

    def passages(self) -> list[TrackedPassage]:
        """Return the passages that have text in the document, in document order."""
        placed = [passage for passage in self._passages if passage.placed]
        return sorted(placed, key=lambda passage: passage.start)

    def unreviewed(self) -> list[TrackedPassage]:
        """Return the unreviewed passages in document order."""
        return [passage for passage in self.passages() if not passage.record.reviewed]

    @property
    def unplaced(self) -> list[GenerationRecord]:
        """Records from the document's records file whose passages were not found in its text."""
        return list(self._unplaced)

    def passage_at(self, position: int, unreviewed_only: bool = True) -> TrackedPassage | None:
        """Return the passage that contains `position` or ends right at it."""
        candidates = self.unreviewed() if unreviewed_only else self.passages()
        ending_here = None
        for passage in candidates:
            if passage.start <= position < passage.end:
                return passage
            if passage.end == position:
                ending_here = passage
        return ending_here

    def next_unreviewed(self, position: int) -> TrackedPassage | None:
        """Return the first unreviewed passage that starts after `position`, wrapping around."""
        pending = self.unreviewed()
        after = [passage for passage in pending if passage.start > position]
        if after:
            return after[0]
        return pending[0] if pending else None

    def previous_unreviewed(self, position: int) -> TrackedPassage | None:
        """Return the last unreviewed passage that starts before `position`, wrapping around."""
        pending = self.unreviewed()
        before = [passage for passage in pending if passage.start < position]
        if before:
            return before[-1]
        return pending[-1] if pending else None

    def select(self, passage: TrackedPassage) -> None:
        """Select `passage` in the editor and scroll to its start."""
        cursor = QTextCursor(self.document)
        # The anchor at the end and the caret at the start: the view scrolls to the start, and a
        # screen reader reads on from there.
        cursor.setPosition(passage.end)
        cursor.setPosition(passage.start, QTextCursor.MoveMode.KeepAnchor)
        self.editor.setTextCursor(cursor)
        # Centring shows the lines after the start too, where the passage continues.
        self.editor.centerCursor()

    def mark_reviewed(self, passage: TrackedPassage) -> None:
        """Mark `passage` reviewed now, which removes its highlight and margin mark."""
        passage.record.mark_reviewed()
        self._refresh()

    def mark_all_reviewed(self) -> int:
        """Mark every unreviewed passage reviewed and return how many were marked."""
        pending = self.unreviewed()
        for passage in pending:
            passage.record.mark_reviewed()
        self._refresh()
        return len(pending)

    def line_range(self, passage: TrackedPassage) -> tuple[int, int]:
        """Return the first and last line (block) numbers of `passage`, counting from 1."""
        first = self.document.findBlock(passage.start).blockNumber() + 1
        last = self.document.findBlock(max(passage.start, passage.end - 1)).blockNumber() + 1
        return first, last

    def describe(self, passage: TrackedPassage) -> str:
        """Return one sentence about `passage` for tooltips and screen readers."""
        first, last = self.line_range(passage)
        lines = f"line {first}" if first == last else f"lines {first} to {last}"
        state = "reviewed" if passage.record.reviewed else "not reviewed"
        return (
            f"Generated text on {lines} by {passage.record.model.name}, "
            f"{passage.record.created_at}, {state}."
        )

    def clear(self) -> None:
        """Forget every passage, for a new or newly opened document."""
        self._passages.clear()
        self._removed.clear()
        self._unplaced.clear()
        self._current = None
        self._refresh()

    # --- a generation's steps ---------------------------------------------------------------

    def begin(
        self,
        text_before_cursor: str,
        params: SamplingParams,
        loaded: LoadedModel,
        fingerprint: WeightFingerprint | None,
    ) -> None:
        """Start the record of a generation that continues `text_before_cursor`."""
        self._end_current()
        record = GenerationRecord(
            model=ModelIdentity.of(loaded, fingerprint), sampling=params.to_mapping()
        )
        self._current = TrackedPassage(record=record)
        self._source_text = text_before_cursor
        self._passages.append(self._current)

    def prompt_ready(self, prompt: Prompt) -> None:
        """Record the prompt window of the current generation."""
        if self._current is not None:
            self._current.record.prompt = PromptWindow.of(prompt, self._source_text)

    def text_inserted(self, piece: str, before: int, after: int) -> None:
        """Extend the current passage by `piece`, inserted between positions `before` and `after`.

        `piece` is the text as the model wrote it. The document may show it with other line
        breaks, which is why the positions are passed as well.
        """
        passage = self._current
        if passage is None or not passage.streaming:
            return
        passage.record.text += piece
        if after <= before:
            return
        if passage.start_cursor is None or passage.end_cursor is None:
            passage.start_cursor = QTextCursor(self.document)
            passage.start_cursor.setPosition(before)
            passage.end_cursor = QTextCursor(self.document)
        passage.end_cursor.setPosition(after)
        self._remember(passage)
        self._refresh()

    def result_ready(self, result: GenerationResult) -> None:
        """Record the seed, tokens and stop reason of the latest generation."""
        if self._current is not None:
            self._current.record.set_result(result)

    def generation_failed(self) -> None:
        """Record that the latest generation failed after the text it inserted so far."""
        if self._current is not None:
            self._current.record.stop_reason = STOP_FAILED

    def end_stream(self) -> None:
        """End the current passage's streaming, and drop the passage if no text arrived."""
        passage = self._current
        if passage is None or not passage.streaming:
            return
        passage.streaming = False
        if not passage.placed:
            self._passages.remove(passage)
            self._current = None
        self._refresh()

    def continue_current(self) -> bool:
        """Reopen the latest passage, so that `text_inserted` extends it until `end_stream`.

        Text inserted right at its end then joins it, as the pieces of a stream do. Returns False,
        and reopens nothing, when that passage has no text in the document any more.
        """
        passage = self._current
        if passage is None or not passage.placed or passage not in self._passages:
            return False
        passage.streaming = True
        return True

    def _end_current(self) -> None:
        self.end_stream()
        self._current = None

    # --- records files ----------------------------------------------------------------------

    def review_file(self, text: str | None = None) -> ReviewFile:
        """Return the records of the document's passages, positions in code points.

        `text`, when given, must be the document's current text, which then is not read again.
        """
        if text is None:
            text = document_text(self.document)
        offsets = OffsetMap(text)
        placed = []
        for passage in self.passages():
            start = offsets.to_code_point(passage.start)
            end = offsets.to_code_point(passage.end)
            placed.append(PlacedPassage(passage.record, start, end, text[start:end]))
        return ReviewFile.for_text(text, placed, self._unplaced)

    def records(self) -> list[GenerationRecord]:
        """Return every record: passages in document order, then unplaced records."""
        return [passage.record for passage in self.passages()] + self._unplaced

    def load(self, review_file: ReviewFile) -> Placement:
        """Replace the passages with those of `review_file`, found in the current text."""
        self.clear()
        text = document_text(self.document)
        placement = place_passages(review_file, text)
        offsets = OffsetMap(text)
        for placed in placement.passages:
            passage = TrackedPassage(record=placed.record, streaming=False)
            passage.start_cursor = QTextCursor(self.document)
            passage.start_cursor.setPosition(offsets.to_utf16(placed.start))
            passage.end_cursor = QTextCursor(self.document)
            passage.end_cursor.setPosition(offsets.to_utf16(placed.end))
            self._remember(passage)
            self._passages.append(passage)
        self._unplaced = list(placement.unplaced)
        self._refresh()
        return placement

    # --- following edits --------------------------------------------------------------------

    def _contents_changed(self, position: int, removed: int, added: int) -> None:
        """Apply the rules of the module docstring to a change, after Qt moved the cursors."""
        if not self._passages and not self._removed:
            return
        for passage in list(self._passages):
            if not passage.placed:
                continue
            if not passage.streaming:
                if self._whole_passage_removed(passage, position, removed):
                    self._retire(passage)
                    continue
                self._keep_typing_outside(passage, position, removed)
            if passage.start >= passage.end and passage.streaming:
                # Its text so far was deleted while more streams in: the next piece anchors it.
                passage.start_cursor = passage.end_cursor = None
                continue
            if passage.start >= passage.end:
                self._retire(passage)
                continue
            if passage.last_start <= position + removed and position <= passage.last_end:
                self._remember(passage)
            else:
                passage.last_start, passage.last_end = passage.start, passage.end
        if removed == 0 and added > 0:
            self._restore_removed(position, added)
        for passage in self._removed:
            passage.last_start = passage.last_end = passage.start
        self._refresh()

    @staticmethod
    def _whole_passage_removed(passage: TrackedPassage, position: int, removed: int) -> bool:
        # A format change reports its range as removed and added but moves no cursor, so only
        # cursors that Qt collapsed onto each other show that the text itself went away.
        return (
            removed > 0
            and position <= passage.last_start
            and position + removed >= passage.last_end
            and passage.start == passage.end
        )

    @staticmethod
    def _keep_typing_outside(passage: TrackedPassage, position: int, removed: int) -> None:
        # NOTE: Undo also inserts at the edges. Undoing the deletion of a passage's first or last
        # words brings them back outside the passage, unmarked. Only a whole passage comes back.
        assert passage.start_cursor is not None
        assert passage.end_cursor is not None
        if position == passage.last_end:
            # Qt moves a cursor along with text inserted at its position: keep the end before it.
            passage.end_cursor.setPosition(position)
        elif position == passage.last_start and removed > 0:
            # Typing over the passage's first characters replaces them inside the passage.
            passage.start_cursor.setPosition(position)

    def _retire(self, passage: TrackedPassage) -> None:
        # A retired passage may still be `_current`, so a late result still reaches its record.
        self._passages.remove(passage)
        if passage.end_cursor is not None:
            passage.end_cursor.setPosition(passage.start)
        self._removed.append(passage)
        del self._removed[:-MAX_REMOVED_PASSAGES]

    def _restore_removed(self, position: int, added: int) -> None:
        for passage in reversed(self._removed):
            text = passage.last_text
            if passage.last_start != position or utf16_length(text) != added:
                continue
            if self._text_between(position, position + added) != text:
                continue
            assert passage.start_cursor is not None
            assert passage.end_cursor is not None
            passage.start_cursor.setPosition(position)
            passage.end_cursor.setPosition(position + added)
            self._removed.remove(passage)
            self._passages.append(passage)
            self._remember(passage)
            return

    def _remember(self, passage: TrackedPassage) -> None:
        passage.last_start, passage.last_end = passage.start, passage.end
        passage.last_text = self._text_between(passage.start, passage.end)

    def _text_between(self, start: int, end: int) -> str:
        cursor = QTextCursor(self.document)
        cursor.setPosition(start)
        cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        return to_plain(cursor.selectedText())

    # --- display ----------------------------------------------------------------------------

    def _refresh(self) -> None:
        selections = []
        for passage in self.unreviewed():
            selection = QTextEdit.ExtraSelection()
            cursor = QTextCursor(self.document)
            cursor.setPosition(passage.start)
            cursor.setPosition(passage.end, QTextCursor.MoveMode.KeepAnchor)
            selection.cursor = cursor
            char_format = QTextCharFormat()
            char_format.setBackground(self.highlight_color)
            selection.format = char_format
            selections.append(selection)
        HighlightLayers.of(self.editor).set_layer(REVIEW_LAYER, selections)
        self.changed.emit()


class ReviewMargin(QWidget):
    """Strip left of the editor's text with a bar beside each unreviewed generated passage.

    Hovering over a bar shows what generated the passage, and clicking selects it.
    """

    WIDTH = 10
    BAR_WIDTH = 4

    def __init__(self, marks: ReviewMarks) -> None:
        super().__init__(marks.editor)
        self.marks = marks
        self.editor = marks.editor
        self.bar_color = QColor(marks.editor.palette().highlight().color())
        self.setAccessibleName("Review marks")
        self.setMouseTracking(True)
        self.editor.setViewportMargins(self.WIDTH, 0, 0, 0)
        self.editor.installEventFilter(self)
        self.editor.updateRequest.connect(lambda _rect, _dy: self.update())
        marks.changed.connect(self._marks_changed)
        self._place()
        self._marks_changed()

    def sizeHint(self) -> QSize:
        return QSize(self.WIDTH, 0)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.editor and event.type() == QEvent.Type.Resize:
            self._place()
        return False

    def _place(self) -> None:
        contents = self.editor.contentsRect()
        self.setGeometry(QRect(contents.left(), contents.top(), self.WIDTH, contents.height()))

    def _marks_changed(self) -> None:
        pending = self.marks.unreviewed()
        if pending:
            spans = []
            for passage in pending:
                first, last = self.marks.line_range(passage)
                spans.append(f"line {first}" if first == last else f"lines {first} to {last}")
            noun = "passage" if len(pending) == 1 else "passages"
            description = f"{len(pending)} unreviewed generated {noun}: {', '.join(spans)}."
        else:
            description = "No unreviewed generated text."
        self.setAccessibleDescription(description)
        self.setToolTip("")
        self.update()

    def bar_rects(self) -> list[tuple[QRect, TrackedPassage]]:
        """Return the bar of each unreviewed passage, in this widget's coordinates."""
        bars = []
        for passage in self.marks.unreviewed():
            start = QTextCursor(self.marks.document)
            start.setPosition(passage.start)
            end = QTextCursor(self.marks.document)
            end.setPosition(max(passage.start, passage.end - 1))
            top = self.editor.cursorRect(start).top()
            bottom = self.editor.cursorRect(end).bottom()
            bars.append((QRect(2, top, self.BAR_WIDTH, max(1, bottom - top + 1)), passage))
        return bars

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(event.rect(), self.palette().window())
        for rect, _passage in self.bar_rects():
            if rect.intersects(event.rect()):
                painter.fillRect(rect, self.bar_color)
        painter.end()

    def _passage_at(self, y: int) -> TrackedPassage | None:
        for rect, passage in self.bar_rects():
            if rect.top() <= y <= rect.bottom():
                return passage
        return None

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            passage = self._passage_at(event.pos().y())
            if passage is None:
                QToolTip.hideText()
            else:
                QToolTip.showText(event.globalPos(), self.marks.describe(passage), self)
            return True
        return super().event(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            passage = self._passage_at(int(event.position().y()))
            if passage is not None:
                self.marks.select(passage)
                self.editor.setFocus()
                return
        super().mousePressEvent(event)
