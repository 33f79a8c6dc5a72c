"""Window-side helpers for files: tracked insertions from review marks, and export to PDF."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QPageLayout, QPageSize
from PySide6.QtPrintSupport import QPrinter
from PySide6.QtWidgets import QPlainTextEdit

from kl3m_desk.docx_documents import TrackedInsertion
from kl3m_desk.review import OffsetMap
from kl3m_desk.ui.editor import document_text
from kl3m_desk.ui.review_marks import ReviewMarks

DOCUMENT_FILTER = (
    "Documents (*.docx *.txt *.md);;Word documents (*.docx);;Text documents (*.txt *.md);;"
    "All files (*)"
)
PDF_FILTER = "PDF files (*.pdf)"


def word_date(timestamp: str) -> str:
    """Return an ISO 8601 UTC time ("2026-03-01T12:00:00+00:00") as Word writes it ("…Z")."""
    return timestamp.replace("+00:00", "Z")


def tracked_insertions(marks: ReviewMarks) -> tuple[list[TrackedInsertion], set[str]]:
    """Return the unreviewed passages as tracked insertions, and the names of every model that
    generated a passage of the document."""
    text = document_text(marks.document)
    offsets = OffsetMap(text)
    insertions = [
        TrackedInsertion(
            offsets.to_code_point(passage.start),
            offsets.to_code_point(passage.end),
            passage.record.model.name,
            word_date(passage.record.created_at),
        )
        for passage in marks.unreviewed()
    ]
    authors = {record.model.name for record in marks.records()}
    return insertions, authors


def export_pdf(editor: QPlainTextEdit, path: Path) -> None:
    """Print the editor's text to a PDF at `path` on US Letter paper.

    Raises OSError when Qt could not write the file.
    """
    printer = QPrinter(QPrinter.PrinterMode.HighResolution)
    printer.setOutputFormat(QPrinter.OutputFormat.PdfFormat)
    printer.setOutputFileName(str(path))
    printer.setPageSize(QPageSize(QPageSize.PageSizeId.Letter))
    printer.setPageOrientation(QPageLayout.Orientation.Portrait)
    printer.setDocName(path.stem)
    editor.document().print_(printer)
    if not path.is_file() or path.stat().st_size == 0:
        raise OSError(f"Qt could not write {path}")
