"""Plain-text documents (.txt, .md): reading in their encoding, and saving without ever leaving a
partial file.

A file that is not UTF-8 is decoded in the encoding charset-normalizer detects, and saved again in
that encoding, so the programs that read it keep working. When the text gains a character that
encoding cannot hold, the file is saved as UTF-8 instead, and `save_document` returns the codec
it used.
"""

from __future__ import annotations

import codecs
import errno
from dataclasses import dataclass
from pathlib import Path

import charset_normalizer

from kl3m_desk.settings import write_bytes_atomically

SUPPORTED_SUFFIXES = (".txt", ".md")

# Leading bytes of file types that are often renamed or mistaken for text.
_BINARY_SIGNATURES = {
    b"%PDF": "a PDF file",
    b"PK\x03\x04": "a ZIP archive (for example a Word .docx file)",
    b"\xd0\xcf\x11\xe0": "an older Microsoft Office file (for example a Word .doc file)",
    b"{\\rtf": "a Rich Text Format file",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control characters that do not occur in text: everything below U+0020 except tab, line feed,
# form feed and carriage return.
_CONTROL = {chr(code) for code in range(32)} - {"\t", "\n", "\f", "\r"}


class DocumentError(Exception):
    """A document could not be read or written; the message names the file and what to do."""


@dataclass(frozen=True)
class TextDocument:
    """Text of a document with "\\n" line endings, and the line ending to write back."""

    text: str
    newline: str  # "\n" or "\r\n": the file's most common line ending
    mixed_newlines: bool = False  # True when the file mixed line endings; a save unifies them
    # Python codec name the file is written in: "utf-8", "utf-8-sig" (with a byte order mark),
    # "utf-16" (with a byte order mark), "cp1252", ...
    encoding: str = "utf-8"

    @property
    def detected(self) -> bool:
        """True when the encoding is neither UTF-8 nor marked by a byte order mark."""
        return self.encoding not in ("utf-8", "utf-8-sig", "utf-16", "utf-32")


def encoding_name(encoding: str) -> str:
    """Return a name for `encoding` that people know, for example "Windows-1252"."""
    names = {
        "utf-8": "UTF-8",
        "utf-8-sig": "UTF-8 with a byte order mark",
        "utf-16": "UTF-16",
        "utf-32": "UTF-32",
        "cp1252": "Windows-1252 (Western European)",
        "cp1250": "Windows-1250 (Central European)",
        "latin_1": "ISO-8859-1 (Latin-1)",
        "mac_roman": "Mac OS Roman",
    }
    normalized = codecs.lookup(encoding).name.replace("-", "_")
    for key, name in names.items():
        if codecs.lookup(key).name.replace("-", "_") == normalized:
            return name
    return encoding.upper()


def read_document(path: Path) -> TextDocument:
    """Read a text file in its encoding, keeping its line ending style for the next save.

    Raises DocumentError for a file that is missing, unreadable or not text.
    """
    raw, encoding = _decode(path, read_file_bytes(path))
    crlf_count = raw.count("\r\n")
    lf_count = raw.count("\n") - crlf_count
    newline = "\r\n" if crlf_count > lf_count else "\n"
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    return TextDocument(
        text=text,
        newline=newline,
        mixed_newlines=crlf_count > 0 and lf_count > 0,
        encoding=encoding,
    )


def _not_text(path: Path, what: str) -> DocumentError:
    return DocumentError(
        f"The file {path} is {what}, not a text document, so it was not opened. kl3m-desk opens "
        ".txt, .md and Word .docx files."
    )


def _decode(path: Path, data: bytes) -> tuple[str, str]:
    """Return the text of `data` and the codec it was decoded with."""
    for signature, what in _BINARY_SIGNATURES.items():
        if data.startswith(signature):
            raise _not_text(path, what)
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _checked(path, data.decode(encoding)), encoding
            except UnicodeDecodeError:
                raise _not_text(path, f"marked as {encoding_name(encoding)} but invalid") from None
    if b"\x00" in data:
        raise _not_text(path, "a binary file (it contains NUL bytes)")
    try:
        return _checked(path, data.decode("utf-8")), "utf-8"
    except UnicodeDecodeError:
        pass
    if _mostly_ascii_windows_1252(data):
        return _checked(path, data.decode("cp1252")), "cp1252"
    match = charset_normalizer.from_bytes(data).best()
    if match is None:
        raise _not_text(path, "a binary file or text in an unknown encoding")
    encoding = codecs.lookup(match.encoding).name
    # Encodings that decode these bytes to the same text are listed as alternatives. Windows-1252
    # is the usual one on US computers, so it is named and kept when it is among them.
    if "cp1252" in match.could_be_from_charset:
        encoding = "cp1252"
    return _checked(path, data.decode(encoding)), encoding


def _mostly_ascii_windows_1252(data: bytes) -> bool:
    """Return True for Windows-1252 bytes of which at most a tenth are not ASCII.

    English and Western European text in Windows-1252 is mostly ASCII, with a few "§", curly
    quotes or accented letters. On a short text of that kind charset-normalizer can guess a
    distant code page (an 8-byte "Café § 2" reads as Arabic), so such bytes are taken as
    Windows-1252 first. Text in Cyrillic or Greek code pages is mostly bytes above 0x7F and
    still goes to charset-normalizer.
    """
    try:
        data.decode("cp1252")
    except UnicodeDecodeError:
        return False
    high = sum(1 for byte in data if byte >= 0x80)
    return high <= max(2, len(data) // 10)


def _checked(path: Path, text: str) -> str:
    controls = sum(1 for char in text[:65536] if char in _CONTROL)
    if controls > 0.01 * min(len(text), 65536) + 2:
        raise _not_text(path, "a binary file (it contains control characters)")
    return text


def encode_document(document: TextDocument) -> tuple[bytes, str]:
    """Return the bytes to write for `document` and the codec used.

    The codec is the document's own unless the text has a character it cannot hold; then it is
    UTF-8.
    """
    text = document.text.replace("\n", document.newline)
    try:
        return text.encode(document.encoding), document.encoding
    except UnicodeEncodeError:
        return text.encode("utf-8"), "utf-8"


def save_document(path: Path, document: TextDocument) -> str:
    """Write the document through a temporary file; return the codec it was written in.

    Raises DocumentError on failure.
    """
    data, encoding = encode_document(document)
    save_file_bytes(path, data)
    return encoding


def read_file_bytes(path: Path) -> bytes:
    """Return the bytes of the document at `path`, raising DocumentError naming the file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DocumentError(f"The file {path} does not exist.") from None
    except OSError as error:
        raise DocumentError(f"The file {path} could not be read: {error.strerror}.") from error


def save_file_bytes(path: Path, data: bytes) -> None:
    """Write a document's bytes atomically, raising DocumentError with the fix for the user."""
    try:
        write_bytes_atomically(path, data)
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
