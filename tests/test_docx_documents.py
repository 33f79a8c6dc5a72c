"""Word documents read as text and saved back into their package, with python-docx and lxml."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
import pytest
from lxml import etree

from kl3m_desk.docx_documents import DocxError, TrackedInsertion, read_docx
from kl3m_desk.docx_numbering import Numbering, format_number
from kl3m_desk.docx_saving import new_docx, render_docx, save_docx
from tests.conftest import DOCUMENTS_DIR

SAMPLE = DOCUMENTS_DIR / "sample.docx"
requires_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"{SAMPLE} is absent")
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
MODEL = "kl3m-002-520m"


def part(data: bytes, name: str) -> etree._Element:
    return etree.fromstring(zipfile.ZipFile(io.BytesIO(data)).read(name))


def body_paragraphs(data: bytes) -> list[etree._Element]:
    return list(part(data, "word/document.xml").find(f"{W}body").iter(f"{W}p"))


def paragraph_text(paragraph: etree._Element) -> str:
    return "".join(node.text or "" for node in paragraph.iter(f"{W}t"))


def numbering(paragraph: etree._Element) -> tuple[str | None, str | None]:
    num_pr = paragraph.find(f"{W}pPr/{W}numPr")
    if num_pr is None:
        return None, None
    return (
        num_pr.find(f"{W}ilvl").get(f"{W}val"),
        num_pr.find(f"{W}numId").get(f"{W}val"),
    )


def style(paragraph: etree._Element) -> str | None:
    element = paragraph.find(f"{W}pPr/{W}pStyle")
    return None if element is None else element.get(f"{W}val")


def run_formats(paragraph: etree._Element) -> list[tuple[str, bytes]]:
    return [
        (
            "".join(node.text or "" for node in run.iter(f"{W}t")),
            etree.tostring(run.find(f"{W}rPr")) if run.find(f"{W}rPr") is not None else b"",
        )
        for run in paragraph.iter(f"{W}r")
    ]


@requires_sample
def test_sample_labels_follow_word_numbering() -> None:
    lines = read_docx(SAMPLE).text.split("\n")
    assert "1.\tServices & Restrictions" in lines
    assert "2.\tPayment & Taxes" in lines
    assert any(line.startswith("1.1\tPerforming Services.") for line in lines)
    assert any(line.startswith("4.2\tTermination.") for line in lines)
    start = lines.index("4.2\tTermination.")
    assert lines[start + 1].startswith("a. \tEither party may terminate")
    assert lines[start + 3].startswith("c. \tCompany and Contractor")
    assert lines[start + 4].startswith("4.3\tEffect of Termination.")
    # The level-3 list restarts after each level-2 paragraph.
    assert lines[start + 5].startswith("a. \tContractor will promptly deliver")
    assert any(line.startswith("1.\tReview the agreement") for line in lines)
    assert any(line.startswith("6.\tSend to your counterparty") for line in lines)


@requires_sample
def test_sample_round_trip_unchanged(tmp_path: Path) -> None:
    opened = read_docx(SAMPLE)
    saved = tmp_path / "saved.docx"
    save_docx(saved, opened.source, opened.text, [], set())

    reopened = read_docx(saved)
    assert reopened.text == opened.text
    before = body_paragraphs(opened.source)
    after = body_paragraphs(saved.read_bytes())
    assert [paragraph_text(p) for p in after] == [paragraph_text(p) for p in before]
    assert [style(p) for p in after] == [style(p) for p in before]
    assert [numbering(p) for p in after] == [numbering(p) for p in before]
    assert [etree.tostring(p) for p in after] == [etree.tostring(p) for p in before]
    for name in ("word/header1.xml", "word/footer1.xml", "word/numbering.xml", "word/styles.xml"):
        assert etree.tostring(part(saved.read_bytes(), name)) == etree.tostring(
            part(opened.source, name)
        )


@requires_sample
def test_sample_edit_keeps_other_formatting(tmp_path: Path) -> None:
    opened = read_docx(SAMPLE)
    old = "1.2\tNon-Solicitation.  During the term"
    assert old in opened.text
    edited = opened.text.replace(old, "1.2\tNon-Solicitation.  During the whole term")
    saved = tmp_path / "edited.docx"
    save_docx(saved, opened.source, edited, [], set())

    before = body_paragraphs(opened.source)
    after = body_paragraphs(saved.read_bytes())
    assert len(after) == len(before)
    changed = [
        index
        for index, (a, b) in enumerate(zip(before, after, strict=True))
        if etree.tostring(a) != etree.tostring(b)
    ]
    assert len(changed) == 1
    [index] = changed
    paragraph = after[index]
    assert paragraph_text(paragraph).startswith("Non-Solicitation.  During the whole term")
    assert style(paragraph) == style(before[index]) == "Heading1"
    assert numbering(paragraph) == numbering(before[index]) == ("1", "2")
    # The underlined title keeps its run properties, and the new word takes its neighbour's.
    old_formats = run_formats(before[index])
    new_formats = run_formats(paragraph)
    assert new_formats[0] == old_formats[0]
    assert new_formats[0][0] == "Non-Solicitation"
    assert b"w:u " in new_formats[0][1]
    assert new_formats[1][1] == old_formats[1][1]
    assert read_docx(saved).text == edited


@requires_sample
def test_sample_warning_and_no_text_lost() -> None:
    opened = read_docx(SAMPLE)
    text = opened.text
    body = part(opened.source, "word/document.xml").find(f"{W}body")
    for node in body.iter(f"{W}t"):
        assert (node.text or "") in text
    for table in body.iter(f"{W}tbl"):
        for cell in table.iter(f"{W}tc"):
            for paragraph in cell.iter(f"{W}p"):
                assert paragraph_text(paragraph) in text
    warning = opened.warning
    assert "sample.docx" in warning
    for name in ("word/header1.xml", "word/header3.xml", "word/footer1.xml"):
        header_text = paragraph_text(next(part(opened.source, name).iter(f"{W}p")))
        assert header_text
        assert header_text[:40] in warning
    assert "headers and footers" in warning
    assert "3 tables" in warning
    assert "hyperlink" not in warning  # the body has none


def test_new_paragraphs_use_neighbour_style(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("Definitions", style="Heading 1")
    document.add_paragraph("First clause.", style="List Number")
    stream = io.BytesIO()
    document.save(stream)
    source = tmp_path / "list.docx"
    source.write_bytes(stream.getvalue())

    opened = read_docx(source)
    lines = opened.text.split("\n")
    assert lines[0] == "Definitions"
    assert lines[1].endswith("First clause.")
    label = lines[1][: -len("First clause.")]
    assert label  # List Number numbers its paragraphs through the style
    text = opened.text + f"\n{label.replace('1', '2')}Second clause.\nPlain closing words."
    data = render_docx(opened.source, text, [], set())
    paragraphs = body_paragraphs(data)
    assert [paragraph_text(p) for p in paragraphs] == [
        "Definitions",
        "First clause.",
        "Second clause.",
        "Plain closing words.",
    ]
    assert style(paragraphs[2]) == "ListNumber"
    reopened = read_docx_bytes(tmp_path, data)
    assert reopened.split("\n")[2] == f"{label.replace('1', '2')}Second clause."
    # A line typed without a label after a numbered paragraph is not numbered.
    assert reopened.split("\n")[3] == "Plain closing words."


def read_docx_bytes(folder: Path, data: bytes) -> str:
    path = folder / "reopened.docx"
    path.write_bytes(data)
    return read_docx(path).text


def test_tracked_insertions_written(tmp_path: Path) -> None:
    text = "The Seller shall deliver the goods.\nThe Buyer shall pay on delivery."
    generated = " on time"
    position = text.index(".")
    edited = text[:position] + generated + text[position:]
    insertion = TrackedInsertion(position, position + len(generated), MODEL, "2026-01-02T03:04:05Z")
    data = new_docx(text)
    first = render_docx(data, edited, [insertion], {MODEL})
    [ins] = list(part(first, "word/document.xml").iter(f"{W}ins"))
    assert ins.get(f"{W}author") == MODEL
    assert ins.get(f"{W}date") == "2026-01-02T03:04:05Z"
    assert ins.get(f"{W}id")
    assert paragraph_text(ins) == generated

    # Once reviewed, the same text is saved without the tracked insertion.
    reviewed = render_docx(first, edited, [], {MODEL})
    assert list(part(reviewed, "word/document.xml").iter(f"{W}ins")) == []
    assert [paragraph_text(p) for p in body_paragraphs(reviewed)] == edited.split("\n")


def test_non_ascii_path_saves(tmp_path: Path) -> None:
    folder = tmp_path / "Verträge & Entwürfe"
    path = folder / "Übereinkunft 1.docx"
    text = "Übereinkunft über § 3 — “Gewährleistung”\n\tZweite Zeile mit Tab"
    save_docx(path, new_docx(""), text, [], set())
    assert read_docx(path).text == text
    assert not [item for item in folder.iterdir() if item.name.endswith(".tmp")]


def test_numbering_formats() -> None:
    assert format_number(3, "lowerLetter") == "c"
    assert format_number(28, "lowerLetter") == "bb"
    assert format_number(4, "upperRoman") == "IV"
    assert format_number(14, "lowerRoman") == "xiv"
    assert format_number(7, "decimalZero") == "07"
    assert format_number(22, "ordinal") == "22nd"
    assert format_number(12, "ordinal") == "12th"


def test_numbering_overrides_and_restarts() -> None:
    xml = f"""<w:numbering xmlns:w="{W[1:-1]}">
      <w:abstractNum w:abstractNumId="5">
        <w:lvl w:ilvl="0"><w:start w:val="1"/><w:numFmt w:val="decimal"/>
          <w:lvlText w:val="Section %1"/><w:suff w:val="space"/></w:lvl>
        <w:lvl w:ilvl="1"><w:start w:val="1"/><w:numFmt w:val="lowerLetter"/>
          <w:lvlText w:val="(%2)"/></w:lvl>
        <w:lvl w:ilvl="2"><w:start w:val="1"/><w:numFmt w:val="lowerRoman"/>
          <w:lvlText w:val="(%3)"/><w:lvlRestart w:val="0"/></w:lvl>
      </w:abstractNum>
      <w:num w:numId="1"><w:abstractNumId w:val="5"/></w:num>
      <w:num w:numId="2"><w:abstractNumId w:val="5"/>
        <w:lvlOverride w:ilvl="0"><w:startOverride w:val="7"/></w:lvlOverride></w:num>
    </w:numbering>"""
    numbering = Numbering(etree.fromstring(xml))

    def paragraph(num_id: str, level: int) -> etree._Element:
        return etree.fromstring(
            f'<w:p xmlns:w="{W[1:-1]}"><w:pPr><w:numPr><w:ilvl w:val="{level}"/>'
            f'<w:numId w:val="{num_id}"/></w:numPr></w:pPr></w:p>'
        )

    labels = []
    for num_id, level in [("1", 0), ("1", 1), ("1", 2), ("1", 2), ("1", 0), ("1", 1), ("1", 2)]:
        label = numbering.label(paragraph(num_id, level))
        assert label is not None
        labels.append(label.prefix)
    assert labels == ["Section 1 ", "(a)\t", "(i)\t", "(ii)\t", "Section 2 ", "(a)\t", "(iii)\t"]
    restarted = numbering.label(paragraph("2", 0))
    assert restarted is not None
    assert restarted.text == "Section 7"


def rich_document(folder: Path) -> Path:
    """Write a .docx with a hyperlink, a text box, a tracked deletion, a soft line break, a
    content control and a table, built as WordprocessingML the way Word writes them."""
    document = docx.Document()
    body = document.element.body
    namespaces = (
        f'xmlns:w="{W[1:-1]}" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
        'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
        'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
        'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape"'
    )
    fragments = [
        f'<w:p {namespaces}><w:r><w:t xml:space="preserve">See </w:t></w:r>'
        '<w:hyperlink w:anchor="terms"><w:r><w:t>the Terms</w:t></w:r></w:hyperlink>'
        '<w:r><w:t xml:space="preserve"> and </w:t></w:r>'
        '<w:del w:id="90" w:author="Jane Roe" w:date="2026-01-01T00:00:00Z"><w:r>'
        "<w:delText>the withdrawn schedule</w:delText></w:r></w:del>"
        '<w:r><w:t xml:space="preserve"> annex.</w:t></w:r></w:p>',
        f"<w:p {namespaces}><w:r><w:t>Box anchor.</w:t>"
        "<w:drawing><wp:anchor><a:graphic><a:graphicData><wps:wsp><wps:txbx><w:txbxContent>"
        "<w:p><w:r><w:t>Confidential draft stamp</w:t></w:r></w:p>"
        "</w:txbxContent></wps:txbx></wps:wsp></a:graphicData></a:graphic></wp:anchor>"
        "</w:drawing></w:r></w:p>",
        f"<w:p {namespaces}><w:r><w:rPr><w:b/></w:rPr><w:t>Notices</w:t><w:br/>"
        "<w:t>to the address above.</w:t></w:r></w:p>",
        f'<w:sdt {namespaces}><w:sdtPr><w:alias w:val="Party"/></w:sdtPr><w:sdtContent>'
        "<w:p><w:r><w:t>Acme Corporation</w:t></w:r></w:p></w:sdtContent></w:sdt>",
    ]
    section = body[-1]
    for fragment in fragments:
        section.addprevious(etree.fromstring(fragment))
    table = document.add_table(rows=2, cols=2)
    for row_index, row in enumerate(table.rows):
        for cell_index, cell in enumerate(row.cells):
            cell.text = f"r{row_index}c{cell_index}"
    path = folder / "rich.docx"
    document.save(str(path))
    return path


def test_rich_document_warning_names_hidden_text(tmp_path: Path) -> None:
    opened = read_docx(rich_document(tmp_path))
    lines = opened.text.split("\n")
    assert lines[0] == "See the Terms and  annex."
    assert lines[1] == "Box anchor."
    assert lines[2:4] == ["Notices", "to the address above."]
    assert lines[4] == "Acme Corporation"
    assert lines[5:7] == ["r0c0\tr0c1", "r1c0\tr1c1"]
    warning = opened.warning
    assert "“Confidential draft stamp”" in warning
    assert "1 text box" in warning
    assert "“the withdrawn schedule”" in warning
    assert "hyperlinks" in warning
    assert "content controls" in warning
    assert "1 table " in warning


def test_rich_document_edits_saved(tmp_path: Path) -> None:
    path = rich_document(tmp_path)
    opened = read_docx(path)
    before = body_paragraphs(opened.source)

    unchanged = render_docx(opened.source, opened.text, [], set())
    assert [etree.tostring(p) for p in body_paragraphs(unchanged)] == [
        etree.tostring(p) for p in before
    ]

    edited = (
        opened.text.replace("to the address above.", "to the address below.")
        .replace("Acme Corporation", "Acme Corporation, Inc.")
        .replace("r1c0\tr1c1", "r1c0\tchanged cell")
    )
    data = render_docx(opened.source, edited, [], set())
    saved = tmp_path / "saved.docx"
    saved.write_bytes(data)
    assert read_docx(saved).text == edited

    after = body_paragraphs(data)
    # The hyperlink and text box paragraphs were not edited, so they are kept whole.
    assert etree.tostring(after[0]) == etree.tostring(before[0])
    assert etree.tostring(after[1]) == etree.tostring(before[1])
    # The soft line break stays a w:br inside one paragraph, and the bold run stays bold.
    [notices] = [p for p in after if paragraph_text(p).startswith("Notices")]
    assert notices.find(f"{W}r/{W}br") is not None
    assert all(run.find(f"{W}rPr/{W}b") is not None for run in notices.iter(f"{W}r"))
    body = part(data, "word/document.xml").find(f"{W}body")
    assert body.find(f"{W}sdt") is None  # an edited content control becomes plain paragraphs
    cells = [paragraph_text(cell) for cell in body.iter(f"{W}tc")]
    assert cells == ["r0c0", "r0c1", "r1c0", "changed cell"]
    assert body[-1].tag == f"{W}sectPr"


def test_control_characters_on_save(tmp_path: Path) -> None:
    data = render_docx(new_docx(""), "Line one\vcontinued\fNext page", [], set())
    [paragraph] = body_paragraphs(data)
    breaks = [br.get(f"{W}type") for br in paragraph.iter(f"{W}br")]
    assert breaks == [None, "page"]
    assert paragraph_text(paragraph) == "Line onecontinuedNext page"
    saved = tmp_path / "page break.docx"
    saved.write_bytes(data)
    assert read_docx(saved).text == "Line one\ncontinued\fNext page"

    with pytest.raises(DocxError, match="U\\+0007 on line 2"):
        render_docx(new_docx(""), "First\nBell \x07 here", [], set())
