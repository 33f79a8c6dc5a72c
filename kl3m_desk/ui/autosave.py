"""Autosave of the window's document to its recovery journal (see kl3m_desk.journal).

`Autosave` writes the journal at most `JOURNAL_DELAY_MS` after the first change that is not yet
in it. The timer is not restarted by later changes, so text streaming in token by token is
journaled every few seconds rather than only after the stream ends. A finished completion is
journaled at once. The text and records are taken on the GUI thread, and the JSON encoding, the
write and the fsync happen on the `JournalWriter` thread.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QStatusBar

from kl3m_desk.document_formats import FileFormat
from kl3m_desk.journal import (
    Journal,
    JournalWriter,
    file_saved_at,
    journal_path,
    new_journal_id,
    recovery_dir,
)
from kl3m_desk.ui.editor import DraftEditor, document_text
from kl3m_desk.ui.inference import InferenceController
from kl3m_desk.ui.message_bar import MessageBar, Topic
from kl3m_desk.ui.review_commands import ReviewCommands

log = logging.getLogger(__name__)

# Maximum milliseconds between a change and the journal that contains it.
JOURNAL_DELAY_MS = 2000


class JournaledDocument(Protocol):
    """The window's state that goes into the journal besides the text and records."""

    file_path: Path | None
    file_format: FileFormat  # the journal keeps its line ending


class Autosave(QObject):
    """Keeps the recovery journal of one window's document while it has unsaved changes."""

    # A journal write failed: file, reason. Emitted on the writer thread, delivered on the GUI's.
    _write_failed = Signal(object, object)
    _written = Signal()

    def __init__(
        self,
        window: JournaledDocument,
        editor: DraftEditor,
        review: ReviewCommands,
        controller: InferenceController,
        message_bar: MessageBar,
        status_bar: QStatusBar,
        directory: Path | None = None,
        delay_ms: int = JOURNAL_DELAY_MS,
    ) -> None:
        super().__init__(editor)
        self.window = window
        self.editor = editor
        self.review = review
        self.message_bar = message_bar
        self.status_bar = status_bar
        self.journal_id = new_journal_id()
        self._failure_shown = False
        self._closed = False
        # The writer thread reaches this object only through a weak reference, so a window that
        # is never closed can still be collected, and the finalizer then ends the thread.
        this = weakref.ref(self)

        def write_failed(path: Path, error: OSError) -> None:
            autosave = this()
            if autosave is not None:
                autosave._write_failed.emit(path, error.strerror or error)

        def written(_journal: Journal) -> None:
            autosave = this()
            if autosave is not None:
                autosave._written.emit()

        self.writer = JournalWriter(
            directory or recovery_dir(), on_error=write_failed, on_written=written
        )
        weakref.finalize(self, self.writer.close, 0)
        self._write_failed.connect(self._show_failure)
        self._written.connect(self._write_succeeded)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.delay_ms = delay_ms
        self.timer.timeout.connect(self.journal_now)

        document = editor.document()
        document.contentsChanged.connect(self.schedule)
        document.modificationChanged.connect(self._modification_changed)
        review.marks.changed.connect(self.schedule)
        controller.generation_finished.connect(self._completion_finished)

    @property
    def path(self) -> Path:
        """The journal file of this window's document."""
        return journal_path(self.journal_id, self.writer.directory)

    def schedule(self) -> None:
        """Journal the document within the delay, unless a journal is already due earlier."""
        if not self._closed and not self.timer.isActive():
            self.timer.start(self.delay_ms)

    def _completion_finished(self, _result: object) -> None:
        # A 0 ms timer runs after the window's own slots for the same signal stored the record.
        if not self._closed:
            self.timer.start(0)

    def journal_now(self) -> None:
        """Take the document's text and records and hand them to the writer thread.

        A document without unsaved changes has no journal, so its journal file is deleted.
        """
        self.timer.stop()
        if self._closed:
            return
        if not self.editor.document().isModified():
            self.writer.delete(self.journal_id)
            return
        file_path = self.window.file_path
        text = document_text(self.editor.document())
        review_file = self.review.records_snapshot(text)
        records = None
        if review_file is not None:
            name = file_path.name if file_path is not None else "Untitled"
            records = review_file.to_json(name)
        journal = Journal(
            journal_id=self.journal_id,
            text=text,
            file_path=file_path,
            newline=self.window.file_format.newline,
            last_saved=file_saved_at(file_path),
            records=records,
            field_values=dict(self.review.field_values),
        )
        self.writer.write(journal)

    def adopt(self, journal: Journal) -> None:
        """Continue `journal` as this window's journal, for a document recovered from it.

        The window's previous journal, if any, is deleted.
        """
        if journal.journal_id != self.journal_id:
            self.writer.delete(self.journal_id)
        self.journal_id = journal.journal_id
        self.schedule()

    def _modification_changed(self, modified: bool) -> None:
        if not modified:  # saved, or the edits were undone: nothing left to recover
            self.timer.stop()
            self.writer.delete(self.journal_id)
        else:
            self.schedule()

    def _show_failure(self, path: Path, reason: object) -> None:
        self.status_bar.showMessage(f"Autosave failed: {reason}", 8000)
        if self._failure_shown:
            return
        self._failure_shown = True
        self.message_bar.show_message(
            Topic.DOCUMENT,
            f"Autosave could not write the recovery copy of this document to {path}: {reason}. "
            "Save the document to keep your changes; autosave keeps trying.",
        )

    def _write_succeeded(self) -> None:
        self._failure_shown = False

    def close(self) -> None:
        """Delete the journal, because the document was saved or discarded, and end the writer."""
        if self._closed:
            return
        self.timer.stop()
        self.writer.delete(self.journal_id)
        self._closed = True
        self.writer.close()
