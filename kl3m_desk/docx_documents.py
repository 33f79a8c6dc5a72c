"""Word documents (.docx) as plain text, saved back into the original package.

The editor holds plain text, so a .docx is shown as lines:

- each body paragraph is a line, with its list label ("1.", "4.2", "a.") written in front of it
  (see kl3m_desk.docx_numbering), and a soft line break (`w:br`) starts a new line;
- each table row is one or more lines whose cells are separated by tabs, where line k holds the
  k-th paragraph of every cell;
- headers, footers, footnotes, comments and text boxes are not shown, and are named in the
  warning returned with the text.

Saving compares the edited lines with the lines read from the original package
(`difflib.SequenceMatcher`). A paragraph whose text is unchanged keeps its XML. An edited
paragraph keeps its paragraph properties (style, numbering) and, where it contains only plain
runs, the character formatting of every unchanged character, and new characters take the
formatting of the character before them. New paragraphs copy the properties of the paragraph
before them. Headers, footers, section properties and every other part of the package are
written back unchanged.

Generated passages that are not yet reviewed are written as tracked insertions (`w:ins`) by the
model's name, so Word shows them as redlines.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docx
from docx.opc.constants import RELATIONSHIP_TYPE as RT
from lxml import etree

from kl3m_desk.documents import DocumentError, read_file_bytes
from kl3m_desk.docx_numbering import Label, Numbering, w

DOCX_SUFFIX = ".docx"
MC_NS = "http://schemas.openxmlformats.org/markup-compatibility/2006"

# Text that may stand in front of a paragraph as a typed list label, followed by a tab, or by a
# space after "." or ")": "1.", "4.2", "(a)", "iv.", "•".
TYPED_LABEL = re.compile(
    r"^(?:\(?(?:\d+(?:\.\d+)*|[A-Za-z]{1,2}|[ivxlcdm]+|[IVXLCDM]+)[.)]\)?(?: |\t)"
    r"|\(?(?:\d+(?:\.\d+)*|[A-Za-z]{1,2}|[ivxlcdm]+|[IVXLCDM]+)\)?\t"
    r"|[•·▪◦‣–-](?: |\t))[ \t]*"
)
_PREVIEW_CHARACTERS = 60


class DocxError(DocumentError):
    """A Word document could not be read or written. The message names the file."""


@dataclass(frozen=True)
class TrackedInsertion:
    """Text of the document to write as a tracked insertion, in code points of the text."""

    start: int
    end: int
    author: str
    date: str  # ISO 8601, for example "2026-03-01T12:00:00Z"


@dataclass
class ReadParagraph:
    """A paragraph as read: its lines without the label, and what saving must know of it."""

    element: etree._Element
    label: Label | None
    text: str  # with "\n" for soft line breaks, without the label
    runs: list[tuple[etree._Element, str, str | None]] | None  # run, text, insertion author
    insertions: list[tuple[int, int, str]]  # tracked insertions in `text`: start, end, author
    mark_author: str | None  # author of a tracked insertion of the paragraph mark

    @property
    def shown(self) -> str:
        return (self.label.prefix if self.label else "") + self.text


@dataclass
class Segment:
    """A body element and its lines. `units` holds the lines of each row (tables) or of the
    whole element (paragraphs, other blocks). Elements without text have no units."""

    kind: str  # "paragraph", "table", "block" or "hidden"
    element: etree._Element
    units: list[list[str]] = field(default_factory=list)
    paragraph: ReadParagraph | None = None
    # Tables: per row, per cell, the cell's paragraphs (None for a cell with other content),
    # and the cell's lines.
    cells: list[list[list[ReadParagraph] | None]] = field(default_factory=list)
    cell_lines: list[list[list[str]]] = field(default_factory=list)


@dataclass
class _Reader:
    """Reads a document body into segments, counting what the editor cannot show."""

    numbering: Numbering
    features: Counter[str] = field(default_factory=Counter)
    previews: dict[str, list[str]] = field(default_factory=dict)

    def note(self, feature: str, preview: str = "") -> None:
        self.features[feature] += 1
        if preview.strip():
            self.previews.setdefault(feature, []).append(_preview(preview))

    def paragraph(self, element: etree._Element) -> ReadParagraph:
        label = self.numbering.label(element)
        pieces: list[str] = []
        runs: list[tuple[etree._Element, str, str | None]] = []
        insertions: list[tuple[int, int, str]] = []
        simple = self._collect(element, pieces, runs, insertions, None)
        mark_insertion = element.find(f"{w('pPr')}/{w('rPr')}/{w('ins')}")
        if element.find(f"{w('pPr')}/{w('pPrChange')}") is not None:
            self.note("tracked formatting change")
        if mark_insertion is not None:
            self.note("tracked insertion")
        return ReadParagraph(
            element=element,
            label=label,
            text="".join(pieces),
            runs=runs if simple else None,
            insertions=insertions,
            mark_author=mark_insertion.get(w("author"), "") if mark_insertion is not None else None,
        )

    def _collect(
        self,
        parent: etree._Element,
        pieces: list[str],
        runs: list[tuple[etree._Element, str, str | None]],
        insertions: list[tuple[int, int, str]],
        author: str | None,
    ) -> bool:
        """Append the shown text of `parent`'s children. Returns False when an edit of the
        paragraph cannot keep its runs."""
        simple = True
        for child in parent:
            name = etree.QName(child).localname if isinstance(child.tag, str) else ""
            if name in ("pPr", "proofErr", "bookmarkStart", "bookmarkEnd", "permStart", "permEnd"):
                continue
            if child.tag == w("r"):
                text, run_simple = self._run(child)
                pieces.append(text)
                runs.append((child, text, author))
                simple = simple and run_simple
            elif name == "ins":
                start = sum(len(piece) for piece in pieces)
                insertion_author = child.get(w("author"), "")
                simple = self._collect(child, pieces, runs, insertions, insertion_author) and simple
                end = sum(len(piece) for piece in pieces)
                insertions.append((start, end, insertion_author))
                self.note("tracked insertion")
            elif name in ("del", "moveFrom"):
                self.note("tracked deletion", _deleted_text(child))
                simple = False
            elif name == "moveTo":
                self.note("tracked insertion")
                self._collect(child, pieces, runs, insertions, None)
                simple = False
            elif name in ("hyperlink", "fldSimple", "smartTag", "customXml", "sdt", "sdtContent"):
                feature = {
                    "hyperlink": "hyperlink",
                    "fldSimple": "field",
                    "sdt": "content control",
                }.get(name)
                if feature:
                    self.note(feature)
                self._collect(child, pieces, runs, insertions, author)
                simple = False
            elif name in ("commentRangeStart", "commentRangeEnd"):
                simple = False
            elif name in ("oMath", "oMathPara"):
                self.note("equation", "".join(child.itertext()))
                simple = False
            elif name == "sdtPr" or name == "sdtEndPr":
                continue
            else:
                self.note("other inline content")
                simple = False
        return simple

    def _run(self, run: etree._Element) -> tuple[str, bool]:
        """Return the shown text of a run and whether it holds only text, tabs and breaks."""
        text = []
        simple = True
        for child in run:
            name = etree.QName(child).localname if isinstance(child.tag, str) else ""
            if name == "t":
                text.append(child.text or "")
            elif name == "tab":
                text.append("\t")
            elif name in ("br", "cr"):
                kind = child.get(w("type"))
                if kind == "page":
                    # A form feed, as page breaks appear in plain text; saving writes it back.
                    text.append("\f")
                elif kind == "column":
                    self.note("column break")
                    simple = False
                else:
                    text.append("\n")
            elif name == "noBreakHyphen":
                text.append("\u2011")
            elif name in ("rPr", "lastRenderedPageBreak"):
                continue
            elif name in ("footnoteReference", "endnoteReference", "commentReference"):
                self.note("note reference")  # the notes' text is quoted from their parts
                simple = False
            elif name in ("fldChar", "instrText"):
                if name == "fldChar" and child.get(w("fldCharType")) == "begin":
                    self.note("field")
                simple = False
            elif name in ("drawing", "pict", "object", "AlternateContent"):
                self._drawing(child)
                simple = False
            elif name in ("delText", "delInstrText"):
                simple = False
            else:
                self.note("other inline content")
                simple = False
        return "".join(text), simple

    def _drawing(self, element: etree._Element) -> None:
        # Word writes a text box twice, as DrawingML and as a VML fallback. Only the first is
        # counted.
        fallback = f"{{{MC_NS}}}Fallback"
        boxes = [
            box
            for box in element.iter(w("txbxContent"))
            if not any(ancestor.tag == fallback for ancestor in box.iterancestors())
        ]
        for box in boxes:
            self.note("text box", " ".join(_paragraph_texts(box)))
        if not boxes:
            self.note("image or drawing")

    def segment(self, element: etree._Element) -> Segment:
        name = etree.QName(element).localname
        if name == "p":
            paragraph = self.paragraph(element)
            return Segment("paragraph", element, [paragraph.shown.split("\n")], paragraph=paragraph)
        if name == "tbl":
            return self.table(element)
        if name == "sectPr":
            return Segment("hidden", element)
        # Paragraphs inside other elements (content controls, custom XML) are read one by one,
        # so numbered ones advance their list's counters as Word does.
        lines = [
            line
            for paragraph in element.iter(w("p"))
            if not any(ancestor.tag == w("txbxContent") for ancestor in paragraph.iterancestors())
            for line in self.paragraph(paragraph).shown.split("\n")
        ]
        if name == "sdt":
            self.note("content control")
        elif name == "altChunk":
            self.note("embedded document")
        if not lines:
            return Segment("hidden", element)
        return Segment("block", element, [lines])

    def table(self, element: etree._Element) -> Segment:
        segment = Segment("table", element)
        self.features["table"] += 1
        for row in element.findall(w("tr")):
            cell_lines: list[list[str]] = []
            row_cells: list[list[ReadParagraph] | None] = []
            for cell in row.findall(w("tc")):
                children = [child for child in cell if child.tag != w("tcPr")]
                if all(child.tag == w("p") for child in children):
                    paragraphs = [self.paragraph(child) for child in children]
                    row_cells.append(paragraphs)
                    lines = [line for p in paragraphs for line in p.shown.split("\n")]
                else:
                    self.note("table inside a table")
                    row_cells.append(None)
                    lines = [
                        line.replace("\t", " ")
                        for part in _paragraph_texts(cell)
                        for line in part.split("\n")
                    ]
                cell_lines.append(lines or [""])
            height = max((len(lines) for lines in cell_lines), default=1)
            segment.units.append(
                [
                    "\t".join(lines[k] if k < len(lines) else "" for lines in cell_lines)
                    for k in range(height)
                ]
            )
            segment.cells.append(row_cells)
            segment.cell_lines.append(cell_lines)
        return segment


def _preview(text: str, limit: int = _PREVIEW_CHARACTERS) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return f"“{text}”"


def _deleted_text(element: etree._Element) -> str:
    return "".join(node.text or "" for node in element.iter(w("delText")))


def _paragraph_texts(element: etree._Element) -> list[str]:
    """Return the text of each paragraph inside `element`, cells of a row joined by tabs."""
    texts = []
    for paragraph in element.iter(w("p")):
        pieces = []
        for node in paragraph.iter(w("t"), w("tab"), w("br")):
            if node.tag == w("t"):
                pieces.append(node.text or "")
            elif node.tag == w("tab") and node.getparent().tag == w("r"):
                pieces.append("\t")
            elif node.tag == w("br"):
                pieces.append("\n")
        texts.append("".join(pieces))
    return texts


@dataclass
class DocxDocument:
    """A .docx read as text, with the package to save it back into."""

    text: str
    source: bytes  # the package as read, which saving starts from
    warning: str  # what the editor cannot show or keep, or "" when nothing


def read_docx(path: Path) -> DocxDocument:
    """Read the .docx at `path`, raising DocxError that names the file."""
    data = read_file_bytes(path)
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise DocxError(
            f"The file {path} is an older Word document (.doc). Open it in Word, save it as "
            ".docx, then open the .docx here."
        )
    document = load_package(data, path)
    segments, reader = read_segments(document)
    text = "\n".join(line for segment in segments for unit in segment.units for line in unit)
    return DocxDocument(text=text, source=data, warning=_warning(path.name, document, reader))


def load_package(data: bytes, path: Path) -> Any:
    try:
        return docx.Document(io.BytesIO(data))
    except Exception as error:  # python-docx raises zipfile, KeyError and XML errors alike
        raise DocxError(
            f"The file {path} is not a Word document that kl3m-desk can read ({error}). "
            "Open it in Word and save it as .docx (Word Document), then try again."
        ) from error


def _related_element(document: Any, relationship: str) -> etree._Element | None:
    try:
        part = document.part.part_related_by(relationship)
    except KeyError:
        return None
    element = getattr(part, "element", None)
    return element if element is not None else etree.fromstring(part.blob)


def read_segments(document: Any) -> tuple[list[Segment], _Reader]:
    numbering = Numbering(
        _related_element(document, RT.NUMBERING), _related_element(document, RT.STYLES)
    )
    reader = _Reader(numbering)
    segments = [reader.segment(child) for child in document.element.body]
    return segments, reader


def _part_texts(document: Any, relationship: str) -> list[str]:
    texts = []
    for rel in document.part.rels.values():
        if rel.reltype != relationship or rel.is_external:
            continue
        part = rel.target_part
        element = getattr(part, "element", None)
        root = element if element is not None else etree.fromstring(part.blob)
        text = " ".join(t for t in _paragraph_texts(root) if t.strip())
        if text.strip():
            texts.append(text)
    return texts


def _notes(document: Any, relationship: str, note_tag: str) -> list[str]:
    """Return the text of each footnote, endnote or comment, leaving out Word's separators."""
    texts = []
    for rel in document.part.rels.values():
        if rel.reltype != relationship or rel.is_external:
            continue
        root = etree.fromstring(rel.target_part.blob)
        for note in root.iter(w(note_tag)):
            if note.get(w("type")) in ("separator", "continuationSeparator"):
                continue
            texts.append(" ".join(_paragraph_texts(note)))
    return texts


def _join_words(words: list[str]) -> str:
    if len(words) <= 2:
        return " or ".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _warning(name: str, document: Any, reader: _Reader) -> str:
    """Compose the one warning shown on opening: what is not shown and what edits lose."""
    features = reader.features
    previews = reader.previews
    not_shown: list[str] = []
    headers = _part_texts(document, RT.HEADER) + _part_texts(document, RT.FOOTER)
    if headers:
        quoted = ", ".join(_preview(text, 200) for text in headers)
        not_shown.append(f"headers and footers ({quoted})")
    for relationship, tag, noun in (
        (RT.FOOTNOTES, "footnote", "footnote"),
        (RT.ENDNOTES, "endnote", "endnote"),
        (RT.COMMENTS, "comment", "comment"),
    ):
        notes = _notes(document, relationship, tag)
        if notes:
            quoted = ", ".join(_preview(text) for text in notes[:3])
            more = ", …" if len(notes) > 3 else ""
            not_shown.append(f"{_plural(len(notes), noun)} ({quoted}{more})")
    for feature, noun in (
        ("text box", "text box"),
        ("image or drawing", "image or drawing"),
        ("equation", "equation"),
        ("embedded document", "embedded document"),
    ):
        if features[feature]:
            quoted = ", ".join(previews.get(feature, [])[:3])
            not_shown.append(_plural(features[feature], noun) + (f" ({quoted})" if quoted else ""))
    if features["tracked deletion"]:
        quoted = ", ".join(previews.get("tracked deletion", [])[:3])
        not_shown.append(
            f"text deleted with tracked changes ({quoted})" if quoted else "tracked deletions"
        )

    # Features that make an edited paragraph fall back to plain runs (see ReadParagraph.runs).
    lost = [
        noun
        for feature, noun in (
            ("hyperlink", "hyperlinks"),
            ("field", "fields (their last result is shown)"),
            ("content control", "content controls"),
            ("column break", "column breaks"),
            ("tracked insertion", "tracked changes"),
            ("tracked deletion", "tracked deletions"),
            ("tracked formatting change", "tracked formatting changes"),
            ("note reference", "footnote or comment references"),
            ("text box", "text boxes"),
            ("image or drawing", "images"),
            ("equation", "equations"),
            ("other inline content", "other inline content"),
            ("table inside a table", "tables inside tables"),
        )
        if features[feature]
    ]
    sentences = [
        f"{name} is shown as plain text. Paragraphs you do not edit are saved exactly as they "
        "were, and so are headers, footers and page setup."
    ]
    if not_shown:
        sentences.append("Not shown, but saved unchanged: " + "; ".join(not_shown) + ".")
    tables = features["table"]
    if tables:
        verb = "is" if tables == 1 else "are"
        sentences.append(
            f"{_plural(tables, 'table')} {verb} shown as rows with a tab between cells. Keep "
            "the tabs to keep the cells apart."
        )
    sentences.append(
        "An edited paragraph keeps its style, its numbering and the character formatting "
        "(bold, italic, underline, font, highlight) of unchanged words."
    )
    if lost:
        sentences.append(
            "Editing a paragraph that contains "
            + _join_words(lost)
            + " saves it as plain text with its style and numbering, without them, and accepts "
            "its tracked changes."
        )
    return " ".join(sentences)
