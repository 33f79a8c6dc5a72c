"""The window's review commands, counter, records file handling and questions.

`ReviewCommands` owns the `ReviewMarks` of the editor, its margin, the actions (Next and Previous
Unreviewed Passage, Mark Passage Reviewed, Mark All Reviewed, Export Generation Records), the
status bar counter and the background computation of the model's sha256. The window calls it at
each step of a generation and when a document is opened or saved.
"""

from __future__ import annotations

import logging
import time
from enum import Enum
from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QApplication, QFileDialog, QLabel, QMessageBox, QStatusBar, QWidget

from kl3m_desk import APP_NAME
from kl3m_desk.fingerprint import WeightHasher
from kl3m_desk.generation import GenerationResult, Prompt
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import SamplingParams
from kl3m_desk.review import (
    GenerationRecord,
    Placement,
    ReviewFile,
    ReviewFileError,
    place_pins,
    read_review_file,
    sidecar_path,
    write_review_file,
)
from kl3m_desk.settings import backup_path
from kl3m_desk.ui.editor import DraftEditor, document_text
from kl3m_desk.ui.message_bar import MessageBar, Topic
from kl3m_desk.ui.pins import PinnedPassages
from kl3m_desk.ui.review_marks import ReviewMargin, ReviewMarks, TrackedPassage

log = logging.getLogger(__name__)

RECORDS_FILTER = "JSON files (*.json);;All files (*)"

# Maximum wait, in seconds, for the sha256 of the model's weights before a save or export writes
# the records without it. The next save fills it in once it is known.
FINGERPRINT_WAIT_SECONDS = 120.0


class UnreviewedChoice(Enum):
    """Answer to the question asked before saving or exporting with unreviewed passages."""

    PROCEED = "proceed"  # Save Anyway or Export Anyway
    REVIEW_FIRST = "review first"
    CANCEL = "cancel"


def plural(count: int, noun: str) -> str:
    """Return `count` and `noun`, with an "s" unless `count` is 1."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class ReviewCommands(QObject):
    """Review marks of the window's editor and the commands that work on them."""

    def __init__(
        self,
        window: QWidget,
        editor: DraftEditor,
        message_bar: MessageBar,
        status_bar: QStatusBar,
    ) -> None:
        super().__init__(window)
        self.window = window
        self.editor = editor
        self.message_bar = message_bar
        self.status_bar = status_bar
        self.marks = ReviewMarks(editor)
        self.margin = ReviewMargin(self.marks)
        self.hasher = WeightHasher()
        self.document_path: Path | None = None
        # The editor's pinned passages, which the records file keeps too. The window sets them.
        self.pins: PinnedPassages | None = None
        # Values entered in clause template fields, by field name, saved with the records.
        self.field_values: dict[str, str] = {}

        self.counter_label = QLabel()
        self.counter_label.setAccessibleName("Unreviewed generated passages")
        self.counter_label.setToolTip(
            "Generated passages not yet marked reviewed. F8 goes to the next one."
        )
        self._create_actions()
        self.marks.changed.connect(self._update)
        self._update()

    def _create_actions(self) -> None:
        def action(text: str, slot: object, shortcut: str, tip: str) -> QAction:
            created = QAction(text, self.window)
            created.setShortcut(QKeySequence(shortcut))
            created.setStatusTip(tip)
            created.setToolTip(f"{tip} ({created.shortcut().toString()})")
            created.triggered.connect(slot)
            return created

        self.next_action = action(
            "Next &Unreviewed Passage",
            self.go_to_next,
            "F8",
            "Select the next generated passage that is not reviewed",
        )
        self.previous_action = action(
            "&Previous Unreviewed Passage",
            self.go_to_previous,
            "Shift+F8",
            "Select the previous generated passage that is not reviewed",
        )
        self.mark_action = action(
            "Mark Passage &Reviewed",
            self.mark_passage_at_cursor,
            "Ctrl+Shift+R",
            "Mark the generated passage at the cursor as reviewed",
        )
        self.mark_all_action = action(
            "Mark &All Reviewed",
            self.mark_all,
            "Ctrl+Alt+Shift+R",
            "Mark every generated passage in the document as reviewed",
        )
        self.export_action = QAction("&Export Generation Records…", self.window)
        self.export_action.setShortcut(QKeySequence("Ctrl+Shift+E"))
        self.export_action.setStatusTip(
            "Save how each generated passage was made (model, settings, seed, prompt) as JSON"
        )
        self.export_action.triggered.connect(self.export_records)

    @property
    def review_actions(self) -> tuple[QAction, ...]:
        """The actions of the Draft menu, in menu order."""
        return (self.next_action, self.previous_action, self.mark_action, self.mark_all_action)

    def _update(self) -> None:
        unreviewed = len(self.marks.unreviewed())
        placed = len(self.marks.passages())
        if unreviewed:
            text = plural(unreviewed, "unreviewed passage")
        elif placed:
            text = "All generated text reviewed"
        else:
            text = ""
        self.counter_label.setText(text)
        self.counter_label.setAccessibleDescription(text)
        self.counter_label.setVisible(bool(text))
        for item in self.review_actions:
            item.setEnabled(unreviewed > 0)
        self.export_action.setEnabled(bool(self.marks.records()))

    # --- a generation's steps ---------------------------------------------------------------

    def model_ready(self, loaded: LoadedModel) -> None:
        """Start computing the sha256 of the model's weights in the background."""
        self.hasher.request(loaded.folder)

    def begin(self, text_before_cursor: str, params: SamplingParams, loaded: LoadedModel) -> None:
        """Start the record of a generation that continues `text_before_cursor`."""
        fingerprint = self.hasher.fingerprint(loaded.folder)
        self.marks.begin(text_before_cursor, params, loaded, fingerprint)

    @property
    def current_record(self) -> GenerationRecord | None:
        """Record of the latest generation, or None when it ended without inserting text."""
        return self.marks.current_record

    def prompt_ready(self, prompt: Prompt) -> None:
        """Record the current generation's prompt window."""
        self.marks.prompt_ready(prompt)

    def text_inserted(self, piece: str, before: int, after: int) -> None:
        """Extend the current passage by `piece`, now between positions `before` and `after`."""
        self.marks.text_inserted(piece, before, after)

    def result_ready(self, result: GenerationResult) -> None:
        """Record the current generation's seed, tokens and stop reason."""
        self.marks.result_ready(result)
        self._fill_fingerprints(wait=False)

    def generation_failed(self) -> None:
        """Record that the current generation failed."""
        self.marks.generation_failed()

    def end_stream(self) -> None:
        """End the current passage once its last text is in the document."""
        self.marks.end_stream()

    def continue_current(self) -> bool:
        """Reopen the latest passage so that text inserted at its end joins it.

        Returns False when that passage is no longer in the document.
        """
        return self.marks.continue_current()

    def _fill_fingerprints(self, wait: bool) -> None:
        """Put the weights' sha256 into records that lack it, waiting for it when `wait` is set."""
        missing = [record for record in self.marks.records() if record.model.sha256 is None]
        if not missing:
            return
        cursor_set = False
        if wait and QApplication.instance() is not None:
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            cursor_set = True
        try:
            deadline = time.monotonic() + FINGERPRINT_WAIT_SECONDS
            for record in missing:
                timeout = max(0.0, deadline - time.monotonic()) if wait else 0
                fingerprint = self.hasher.fingerprint(Path(record.model.folder), timeout)
                if fingerprint is not None:
                    record.model.set_fingerprint(fingerprint)
        finally:
            if cursor_set:
                QApplication.restoreOverrideCursor()

    # --- navigation and review --------------------------------------------------------------

    def go_to_next(self) -> None:
        """Select the next unreviewed passage after the cursor, wrapping to the first."""
        position = self.editor.textCursor().selectionStart()
        passage = self.marks.next_unreviewed(position)
        self._go_to(passage, wrapped=passage is not None and passage.start <= position)

    def go_to_previous(self) -> None:
        """Select the previous unreviewed passage before the cursor, wrapping to the last."""
        position = self.editor.textCursor().selectionStart()
        passage = self.marks.previous_unreviewed(position)
        self._go_to(passage, wrapped=passage is not None and passage.start >= position)

    def go_to_first(self) -> None:
        """Select the first unreviewed passage of the document."""
        pending = self.marks.unreviewed()
        self._go_to(pending[0] if pending else None, wrapped=False)

    def _go_to(self, passage: TrackedPassage | None, wrapped: bool) -> None:
        pending = self.marks.unreviewed()
        if passage is None or passage not in pending:
            self.status_bar.showMessage("No unreviewed generated passages", 4000)
            return
        self.marks.select(passage)
        self.editor.setFocus()
        number = pending.index(passage) + 1
        message = f"Unreviewed passage {number} of {len(pending)}"
        if wrapped and len(pending) > 1:
            message += " (continued from the other end of the document)"
        self.status_bar.showMessage(message, 6000)

    def mark_passage_at_cursor(self) -> None:
        """Mark the unreviewed passage at the cursor reviewed."""
        passage = self.marks.passage_at(self.editor.textCursor().position())
        if passage is None:
            self.status_bar.showMessage(
                "The cursor is not in an unreviewed generated passage. Press F8 to go to one.",
                6000,
            )
            return
        self.marks.mark_reviewed(passage)
        remaining = len(self.marks.unreviewed())
        self.status_bar.showMessage(
            f"Passage marked reviewed, {plural(remaining, 'unreviewed passage')} left", 6000
        )

    def mark_all(self) -> None:
        """Mark every unreviewed passage reviewed after asking."""
        count = len(self.marks.unreviewed())
        if count == 0 or not self.confirm_mark_all(count):
            return
        self.marks.mark_all_reviewed()
        self.status_bar.showMessage(f"{plural(count, 'passage')} marked reviewed", 6000)

    def confirm_mark_all(self, count: int) -> bool:
        """Ask whether `count` passages were all reviewed."""
        answer = QMessageBox.question(
            self.window,
            APP_NAME,
            f"Mark all {plural(count, 'generated passage')} in this document as reviewed?\n\n"
            "Do this only after a qualified person has read every one of them.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        return answer == QMessageBox.StandardButton.Yes

    # --- the question before saving or exporting --------------------------------------------

    def ask_unreviewed(self, count: int, verb: str) -> UnreviewedChoice:
        """Ask what to do about `count` unreviewed passages before `verb` ("Save", "Export")."""
        box = QMessageBox(self.window)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle(APP_NAME)
        box.setText(f"This document has {plural(count, 'unreviewed generated passage')}.")
        box.setInformativeText(
            "Generated text can be wrong or unsuited to the matter, so each passage needs review "
            "by a qualified person."
        )
        proceed = box.addButton(f"{verb} Anyway", QMessageBox.ButtonRole.AcceptRole)
        review = box.addButton("Review First", QMessageBox.ButtonRole.ActionRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(review)
        box.exec()
        clicked = box.clickedButton()
        if clicked is proceed:
            return UnreviewedChoice.PROCEED
        if clicked is review:
            return UnreviewedChoice.REVIEW_FIRST
        return UnreviewedChoice.CANCEL

    def confirm_unreviewed(self, verb: str) -> bool:
        """Return True when `verb` may go ahead, asking the user first about unreviewed passages.

        Review First selects the first unreviewed passage and returns False.
        """
        count = len(self.marks.unreviewed())
        if count == 0:
            return True
        choice = self.ask_unreviewed(count, verb)
        if choice is UnreviewedChoice.REVIEW_FIRST:
            self.go_to_first()
        return choice is UnreviewedChoice.PROCEED

    # --- records files ----------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every passage and pinned passage, for a new document."""
        self.marks.clear()
        if self.pins is not None:
            self.pins.clear()
        self.field_values = {}
        self.document_path = None

    def load_for(self, document: Path) -> None:
        """Load the records file beside `document`, whose text the editor now shows.

        An invalid records file is renamed aside and reported, and the document stays open
        without marks.
        """
        self.document_path = document
        self.marks.clear()
        if self.pins is not None:
            self.pins.clear()
        self.field_values = {}
        path = sidecar_path(document)
        if not path.exists():
            return
        try:
            review_file = read_review_file(path)
        except ReviewFileError as error:
            log.warning("Could not read the generation records: %s", error)
            kept = self._move_aside(path)
            self.message_bar.show_message(
                Topic.DOCUMENT,
                f"{error} The document opened without review marks.{kept}",
            )
            return
        placement = self.marks.load(review_file)
        self.field_values = dict(review_file.field_values)
        pins_message = self._load_pins(document, review_file)
        log.info(
            "Loaded %d generation records from %s: %d placed, %d moved, %d not found",
            len(review_file.records),
            path,
            len(placement.passages),
            placement.relocated,
            placement.newly_unplaced,
        )
        message = self._placement_message(document, placement)
        if pins_message:
            message = f"{message} {pins_message}" if message else pins_message
        if message:
            self.message_bar.show_message(Topic.DOCUMENT, message, self.export_action)

    def _load_pins(self, document: Path, review_file: ReviewFile) -> str:
        """Pin the records file's pinned passages again, found by their text where it moved.

        Returns a sentence about the passages that were not found, or "".
        """
        if self.pins is None or not review_file.pins:
            return ""
        placed, missing = place_pins(review_file.pins, document_text(self.editor.document()))
        self.pins.load(placed)
        log.info("Pinned %d passages from the records file, %d not found", len(placed), missing)
        if not missing:
            return ""
        return (
            f"{plural(missing, 'pinned passage')} of {document.name} could not be found in its "
            f"text and {'is' if missing == 1 else 'are'} no longer pinned."
        )

    def records_snapshot(self, text: str) -> ReviewFile | None:
        """Return the records and pinned passages of the document, whose text is `text`.

        Returns None when the document has neither.
        """
        pinned = self.pins.snapshot(text) if self.pins is not None else ()
        if not self.marks.records() and not pinned:
            return None
        review_file = self.marks.review_file(text)
        review_file.pins = list(pinned)
        return review_file

    def restore(self, review_file: ReviewFile, document: Path | None) -> None:
        """Put back the marks and pinned passages of `review_file`, taken from the current text.

        The editor must show the very text the records were taken from, as after a recovery.
        """
        self.document_path = document
        self.marks.load(review_file)
        if self.pins is not None:
            self.pins.clear()
            placed, _missing = place_pins(review_file.pins, document_text(self.editor.document()))
            self.pins.load(placed)

    def _review_file(self) -> ReviewFile:
        """Return the records of the document's passages, with its pinned passages."""
        review_file = self.marks.review_file()
        if self.pins is not None:
            review_file.pins = list(self.pins.snapshot())
        review_file.field_values = dict(self.field_values)
        return review_file

    @staticmethod
    def _placement_message(document: Path, placement: Placement) -> str:
        sentences = []
        if placement.text_changed and (placement.relocated or placement.newly_unplaced):
            sentences.append(
                f"{document.name} was changed outside kl3m-desk after its generation records "
                "were saved."
            )
        relocated = placement.relocated
        if relocated:
            sentences.append(
                f"{plural(relocated, 'generated passage')} "
                f"{'was' if relocated == 1 else 'were'} found again by text at another "
                "position. Check that the marks cover the right words."
            )
        missing = placement.newly_unplaced
        if missing:
            sentences.append(
                f"{plural(missing, 'generated passage')} could not be found in the text and "
                f"{'is' if missing == 1 else 'are'} no longer marked. The records are kept in "
                f"{sidecar_path(document).name} and in exported generation records."
            )
        return " ".join(sentences)

    @staticmethod
    def _move_aside(path: Path) -> str:
        backup = backup_path(path)
        try:
            path.replace(backup)
        except OSError as error:
            log.warning("Could not rename the invalid records file %s: %s", path, error)
            return ""
        return f" The file was renamed to {backup.name}."

    def save_for(self, document: Path) -> bool:
        """Write the records file beside `document`, which was just saved.

        A document without records, pinned passages or field values gets no records file, and an
        old one beside it is removed. Returns False, after showing why, when the file could not
        be written.
        """
        self.document_path = document
        path = sidecar_path(document)
        self._fill_fingerprints(wait=True)
        review_file = self._review_file()
        try:
            if review_file.records or review_file.pins or review_file.field_values:
                write_review_file(path, review_file, document.name)
            elif path.exists():
                path.unlink()
                log.info("Removed %s: the document has no generated or pinned passages", path)
        except OSError as error:
            log.warning("Could not write the generation records %s: %s", path, error)
            self.message_bar.show_message(
                Topic.DOCUMENT,
                f"{document.name} was saved, but its generation records could not be written to "
                f"{path}: {error.strerror or error}. Save again, or export the records.",
                self.export_action,
            )
            return False
        return True

    def export_records(self) -> bool:
        """Ask for a file and write every generation record of the document there as JSON."""
        if not self.marks.records():
            self.status_bar.showMessage("This document has no generation records to export", 5000)
            return False
        if not self.confirm_unreviewed("Export"):
            return False
        if self.document_path is not None:
            start = self.document_path.with_name(
                self.document_path.stem + ".generation-records.json"
            )
        else:
            start = Path.home() / "Untitled.generation-records.json"
        name, _ = QFileDialog.getSaveFileName(
            self.window, "Export generation records", str(start), RECORDS_FILTER
        )
        if not name:
            return False
        return self.export_to(Path(name))

    def export_to(self, path: Path) -> bool:
        """Write every generation record of the document to `path` as JSON."""
        self._fill_fingerprints(wait=True)
        document_name = self.document_path.name if self.document_path else "Untitled"
        try:
            write_review_file(path, self._review_file(), document_name)
        except OSError as error:
            log.warning("Could not export the generation records to %s: %s", path, error)
            self.message_bar.show_message(
                Topic.DOCUMENT,
                f"The generation records could not be exported to {path}: "
                f"{error.strerror or error}. Choose another folder.",
            )
            return False
        self.status_bar.showMessage(f"Exported the generation records to {path}", 5000)
        log.info("Exported %d generation records to %s", len(self.marks.records()), path)
        return True

    def shutdown(self) -> None:
        """Stop the background sha256 computation."""
        self.hasher.shutdown()
