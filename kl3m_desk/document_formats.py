"""Opening and saving a document in the format its file name asks for: .docx, or text.

The window keeps a `FileFormat` for the open document. It remembers what saving needs: the
text file's encoding and line ending, or the Word package the text was read from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from kl3m_desk.documents import (
    TextDocument,
    encoding_name,
    read_document,
    save_document,
)
from kl3m_desk.docx_documents import DOCX_SUFFIX, TrackedInsertion, read_docx
from kl3m_desk.docx_saving import new_docx, save_docx


@dataclass(frozen=True)
class FileFormat:
    """The encoding and line ending, or the Word package, that the open document was read from."""

    newline: str = "\n"
    encoding: str = "utf-8"
    docx_source: bytes | None = None  # the Word package last read or written, for .docx files


@dataclass(frozen=True)
class OpenedFile:
    """A document read from disk, and a notice for the person, or "" when there is none."""

    text: str
    file_format: FileFormat
    notice: str
    mixed_newlines: bool = False


def is_docx(path: Path) -> bool:
    """Return True when `path` names a Word document."""
    return path.suffix.lower() == DOCX_SUFFIX


def open_file(path: Path) -> OpenedFile:
    """Read `path` as a Word document or as text, raising DocumentError naming the file."""
    if is_docx(path):
        document = read_docx(path)
        return OpenedFile(document.text, FileFormat(docx_source=document.source), document.warning)
    text = read_document(path)
    notice = ""
    if text.detected:
        notice = (
            f"{path.name} is not UTF-8, so it was read as {encoding_name(text.encoding)}, the "
            "encoding its bytes match best. If characters look wrong, close it without saving. "
            "Saving keeps this encoding unless the text gains a character it cannot hold, "
            "and then saves as UTF-8."
        )
    return OpenedFile(
        text.text,
        FileFormat(newline=text.newline, encoding=text.encoding),
        notice,
        text.mixed_newlines,
    )


def save_file(
    path: Path,
    text: str,
    file_format: FileFormat,
    insertions: list[TrackedInsertion],
    authors: set[str],
) -> tuple[FileFormat, str]:
    """Save `text` to `path` in the format its suffix names; return the new format and a notice.

    A .docx is written into the Word package the document came from, or into a new one when it
    was a text document. `insertions` become tracked insertions there, and `authors` are the
    model names whose earlier tracked insertions may be rewritten. Raises DocumentError.
    """
    if is_docx(path):
        source = file_format.docx_source or new_docx("")
        data = save_docx(path, source, text, insertions, authors)
        return FileFormat(docx_source=data), ""
    document = TextDocument(text=text, newline=file_format.newline, encoding=file_format.encoding)
    written = save_document(path, document)
    notice = ""
    if written != file_format.encoding:
        notice = (
            f"{path.name} was saved as UTF-8, because the text has characters that "
            f"{encoding_name(file_format.encoding)} cannot hold."
        )
    return replace(file_format, encoding=written, docx_source=None), notice
