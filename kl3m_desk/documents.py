"""Plain-text documents (.txt, .md): reading, and saving without ever leaving a partial file."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from kl3m_desk.settings import write_text_atomically

SUPPORTED_SUFFIXES = (".txt", ".md")


class DocumentError(Exception):
    """A document could not be read or written; the message names the file and what to do."""


@dataclass(frozen=True)
class TextDocument:
    """Text of a document with "\\n" line endings, and the line ending to write back."""

    text: str
    newline: str  # "\n" or "\r\n": the file's most common line ending
    mixed_newlines: bool = False  # True when the file mixed line endings; a save unifies them


def read_document(path: Path) -> TextDocument:
    """Read a UTF-8 text file, keeping its line ending style for the next save."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DocumentError(f"The file {path} does not exist.") from None
    except OSError as error:
        raise DocumentError(f"The file {path} could not be read: {error.strerror}.") from error
    if b"\x00" in data:
        raise DocumentError(
            f"The file {path} is not a text file. kl3m-desk opens UTF-8 .txt and .md files."
        )
    try:
        raw = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DocumentError(
            f"The file {path} is not UTF-8 text (invalid byte at position {error.start}). "
            "Save it as UTF-8 in another editor, then open it again."
        ) from None
    crlf_count = raw.count("\r\n")
    lf_count = raw.count("\n") - crlf_count
    newline = "\r\n" if crlf_count > lf_count else "\n"
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    return TextDocument(text=text, newline=newline, mixed_newlines=crlf_count > 0 and lf_count > 0)


def save_document(path: Path, document: TextDocument) -> None:
    """Write the document as UTF-8 through a temporary file, raising DocumentError on failure."""
    try:
        write_text_atomically(path, document.text, newline=document.newline)
    except OSError as error:
        reason = error.strerror or str(error)
        raise DocumentError(
            f"The file {path} could not be saved: {reason}. {_save_advice(path, error)} "
            "The document is still open with its unsaved changes."
        ) from error


def _save_advice(path: Path, error: OSError) -> str:
    """Return what the user can do about `error`, raised while saving `path`."""
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return (
            f"The disk that holds {path.parent} is full. Free some space and save again, "
            "or use Save As to save to another disk."
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"The folder {path.parent} is read-only or you may not write to it. "
            "Use Save As to save to another folder."
        )
    return "Use Save As to save to another folder."
