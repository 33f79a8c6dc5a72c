"""Opening and saving .docx, non-UTF-8 and binary files in the drafting window, and PDF export."""

from __future__ import annotations

import codecs
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from pytestqt.qtbot import QtBot

from kl3m_desk.docx_documents import read_docx
from kl3m_desk.review import sidecar_path, utf16_length
from kl3m_desk.ui.editor import document_text
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from kl3m_desk.ui.message_bar import Topic
from tests.conftest import DOCUMENTS_DIR
from tests.test_review_window import generate_at, make_window, set_document

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
SAMPLE = DOCUMENTS_DIR / "sample.docx"
CP1252_TEXT = "“Seller” shall deliver under § 4.2—on time.\r\nSecond line café.\r\n"


@pytest.fixture(autouse=True)
def discard_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer "Discard" to the unsaved-changes question, which would block a test run."""
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)


@pytest.fixture
def plain_window(qtbot: QtBot, isolated_profile: Path) -> MainWindow:
    return make_window(qtbot)


@pytest.fixture
def model_window(
    qtbot: QtBot, isolated_profile: Path, tiny_model_dir: Path
) -> Iterator[MainWindow]:
    created = make_window(qtbot, max_new_tokens=16, seed=11)
    created.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: created.controller.model is not None, timeout=30_000)
    yield created
    created.controller.shutdown()


def editor_text(window: MainWindow) -> str:
    return document_text(window.editor.document())


def document_xml(path: Path) -> etree._Element:
    return etree.fromstring(zipfile.ZipFile(path).read("word/document.xml"))


def test_cp1252_file_opens_and_keeps_encoding(plain_window: MainWindow, tmp_path: Path) -> None:
    path = tmp_path / "Kaufvertrag alt.txt"
    path.write_bytes(CP1252_TEXT.encode("cp1252"))
    assert plain_window.open_document(path)
    assert editor_text(plain_window) == CP1252_TEXT.replace("\r\n", "\n")
    notice = "\n".join(plain_window.message_bar.messages())
    assert "Windows-1252" in notice
    assert "Kaufvertrag alt.txt" in notice

    plain_window.editor.appendPlainText("Added—§ 5.")
    assert plain_window.save_to(path)
    assert path.read_bytes().decode("cp1252").endswith("Added—§ 5.")
    assert b"\r\n" in path.read_bytes()

    # A character Windows-1252 cannot hold makes the save switch to UTF-8, with a message.
    plain_window.editor.appendPlainText("東京")
    assert plain_window.save_to(path)
    assert path.read_bytes().decode("utf-8").endswith("東京")
    assert any("saved as UTF-8" in message for message in plain_window.message_bar.messages())


def test_utf16_file_with_bom_opens(plain_window: MainWindow, tmp_path: Path) -> None:
    path = tmp_path / "utf16.txt"
    text = "§ 1 “Agreement” means this agreement.\nΩ and 東京 are kept."
    path.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    assert plain_window.open_document(path)
    assert editor_text(plain_window) == text
    assert plain_window.save_to(path)
    assert path.read_bytes().startswith(codecs.BOM_UTF16_LE)
    assert path.read_bytes().decode("utf-16") == text


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("scan.txt", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "a PDF file"),
        ("archive.txt", b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "a ZIP archive"),
        ("data.md", b"abc\x00\x01\x02\x03def\x00\xff\xfe", "NUL bytes"),
    ],
)
def test_binary_file_rejected_document_kept(
    plain_window: MainWindow, tmp_path: Path, name: str, data: bytes, expected: str
) -> None:
    kept = tmp_path / "kept.txt"
    kept.write_text("The current draft stays open.\n", encoding="utf-8")
    assert plain_window.open_document(kept)
    path = tmp_path / name
    path.write_bytes(data)

    assert not plain_window.open_document(path)
    assert editor_text(plain_window) == "The current draft stays open.\n"
    assert plain_window.file_path == kept
    message = "\n".join(plain_window.message_bar.messages())
    assert name in message
    assert expected in message
    assert "not a text document" in message


@pytest.mark.skipif(not SAMPLE.is_file(), reason=f"{SAMPLE} is absent")
def test_docx_open_shows_warning(plain_window: MainWindow, tmp_path: Path) -> None:
    assert plain_window.open_document(SAMPLE)
    assert "1.1\tPerforming Services." in editor_text(plain_window)
    warning = plain_window.message_bar.messages()
    assert any("headers and footers" in message for message in warning)

    folder = tmp_path / "Verträge & Entwürfe"
    folder.mkdir()
    target = folder / "Übereinkunft 1.docx"
    assert plain_window.save_to(target)
    assert read_docx(target).text == editor_text(plain_window)
    assert not plain_window.editor.document().isModified()


def test_save_as_docx_from_text(plain_window: MainWindow, tmp_path: Path) -> None:
    source = tmp_path / "draft.txt"
    source.write_text("Article 1\nThe parties agree.\n", encoding="utf-8")
    assert plain_window.open_document(source)
    target = tmp_path / "Verträge & Entwürfe" / "Übereinkunft 1.docx"
    assert plain_window.save_to(target)
    texts = [
        "".join(node.text or "" for node in paragraph.iter(f"{W}t"))
        for paragraph in document_xml(target).iter(f"{W}p")
    ]
    assert texts == ["Article 1", "The parties agree.", ""]
    assert source.read_text(encoding="utf-8") == "Article 1\nThe parties agree.\n"


def test_unreviewed_passages_tracked_in_docx(
    qtbot: QtBot, model_window: MainWindow, tmp_path: Path
) -> None:
    window = model_window
    opening = "The Seller shall deliver the goods to the Buyer.\n\nThe Buyer shall"
    set_document(window, opening)
    generate_at(qtbot, window, utf16_length(opening))
    [passage] = window.review.marks.passages()
    generated = editor_text(window)[len(opening) :]
    assert generated
    model_name = passage.record.model.name

    path = tmp_path / "Verträge & Entwürfe" / "Übereinkunft 1.docx"
    assert window.save_to(path)
    insertions = list(document_xml(path).iter(f"{W}ins"))
    assert insertions
    assert {item.get(f"{W}author") for item in insertions} == {model_name}
    assert all(item.get(f"{W}date", "").endswith("Z") for item in insertions)
    inserted = "".join(node.text or "" for item in insertions for node in item.iter(f"{W}t"))
    assert inserted.replace("\n", "") == generated.replace("\n", "")
    assert sidecar_path(path).is_file()

    # The records file places the passage again when the .docx is opened.
    assert window.open_document(path)
    [reopened] = window.review.marks.passages()
    assert reopened.record.id == passage.record.id

    window.review.marks.mark_reviewed(reopened)
    assert window.save_to(path)
    assert list(document_xml(path).iter(f"{W}ins")) == []
    assert read_docx(path).text == editor_text(window)


def test_export_pdf(plain_window: MainWindow, tmp_path: Path) -> None:
    set_document(plain_window, "§ 1 Scope.\nThe Contractor shall perform the Services.")
    path = tmp_path / "Verträge & Entwürfe" / "Übereinkunft 1.pdf"
    path.parent.mkdir()
    assert plain_window.export_pdf_to(path)
    assert path.read_bytes().startswith(b"%PDF")
    assert Topic.DOCUMENT not in plain_window.message_bar._messages


def test_docx_bytes_are_a_zip(plain_window: MainWindow, tmp_path: Path) -> None:
    set_document(plain_window, "One paragraph.")
    path = tmp_path / "one.docx"
    assert plain_window.save_to(path)
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as package:
        assert "word/document.xml" in package.namelist()
