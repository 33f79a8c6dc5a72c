"""Saving edited text back into a .docx package (see kl3m_desk.docx_documents for the model)."""

from __future__ import annotations

import copy
import difflib
import io
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import docx
from lxml import etree

from kl3m_desk.documents import save_file_bytes
from kl3m_desk.docx_documents import (
    TYPED_LABEL,
    DocxError,
    ReadParagraph,
    Segment,
    TrackedInsertion,
    load_package,
    read_segments,
)
from kl3m_desk.docx_numbering import Numbering, w

XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"
# Characters XML 1.0 does not allow, except vertical tab and form feed, which are written as a
# line break and a page break.
_XML_INVALID = re.compile("[\x00-\x08\x0e-\x1f\ufffe\uffff\ud800-\udfff]")

# A line of the new text, and its offset in code points in the whole text.
Line = tuple[str, int]


@dataclass(frozen=True)
class _Range:
    start: int
    end: int
    author: str
    date: str


def render_docx(
    source: bytes, text: str, insertions: list[TrackedInsertion], authors: set[str]
) -> bytes:
    """Return the package `source` with its body replaced by `text`.

    `insertions` are written as tracked insertions. Tracked insertions already in `source` by one
    of `authors` (the models of the document's generation records) are the document's own
    generated passages: they are rewritten to match `insertions`, so a passage reviewed since the
    last save loses its redline.

    Raises DocxError when the text has a control character that XML cannot hold.
    """
    _check_characters(text)
    document = load_package(source, Path("document.docx"))
    segments, reader = read_segments(document)
    writer = _Writer(
        text, insertions, authors | {item.author for item in insertions}, reader.numbering
    )
    writer.next_id = 1 + max(
        (
            int(value)
            for element in document.element.body.iter()
            if (value := element.get(w("id"))) is not None and value.isdigit()
        ),
        default=0,
    )
    body = document.element.body
    children = writer.build(segments)
    for child in list(body):
        body.remove(child)
    for child in children:
        body.append(child)
    stream = io.BytesIO()
    document.save(stream)
    return stream.getvalue()


def save_docx(
    path: Path,
    source: bytes,
    text: str,
    insertions: list[TrackedInsertion],
    authors: set[str],
) -> bytes:
    """Write `text` into `source` and save it at `path` atomically; return the bytes written.

    Raises DocumentError naming the file when it could not be written.
    """
    data = render_docx(source, text, insertions, authors)
    save_file_bytes(path, data)
    return data


class _Writer:
    """Builds the new body children from the segments read and the edited text."""

    def __init__(
        self, text: str, insertions: list[TrackedInsertion], authors: set[str], numbering: Numbering
    ) -> None:
        self.text = text
        self.lines = text.split("\n")
        self.starts = []
        offset = 0
        for line in self.lines:
            self.starts.append(offset)
            offset += len(line) + 1
        self.ranges = [
            _Range(item.start, item.end, item.author, item.date)
            for item in sorted(insertions, key=lambda item: item.start)
            if item.end > item.start
        ]
        self.authors = authors
        self.numbering = numbering
        self.next_id = 1

    # --- lines to segments ------------------------------------------------------------------

    def build(self, segments: list[Segment]) -> list[etree._Element]:
        """Return the new body children."""
        owners: list[tuple[int, int]] = []
        old_lines: list[str] = []
        for index, segment in enumerate(segments):
            for unit_index, unit in enumerate(segment.units):
                old_lines.extend(unit)
                owners.extend([(index, unit_index)] * len(unit))

        pairs = _pair_lines(old_lines, self.lines)

        next_old: list[int | None] = [None] * len(pairs)
        following: int | None = None
        for position in range(len(pairs) - 1, -1, -1):
            next_old[position] = following
            if pairs[position][0] is not None:
                following = pairs[position][0]

        assigned: dict[tuple[int, int], list[Line]] = defaultdict(list)
        standalone: dict[int, list[Line]] = defaultdict(list)  # new paragraphs after a segment
        previous: int | None = None
        for position, (old, new) in enumerate(pairs):
            if old is not None:
                previous = old
                if new is not None:
                    assigned[owners[old]].append((self.lines[new], self.starts[new]))
                continue
            assert new is not None
            line = (self.lines[new], self.starts[new])
            after = next_old[position]
            same_element = (
                previous is not None
                and after is not None
                and owners[previous][0] == owners[after][0]
            )
            if same_element:
                assert previous is not None
                # Between two lines of one paragraph, row or block: it joins that element.
                assigned[owners[previous]].append(line)
            else:
                standalone[owners[previous][0] if previous is not None else -1].append(line)

        children: list[etree._Element] = []
        neighbour = next(
            (segment.element for segment in segments if segment.kind == "paragraph"), None
        )
        for line in standalone[-1]:
            children.append(self.new_paragraph(line, neighbour))
        for index, segment in enumerate(segments):
            if segment.kind == "hidden":
                children.append(segment.element)
                continue
            units = [assigned[(index, unit)] for unit in range(len(segment.units))]
            start = len(children)
            if segment.kind == "paragraph":
                children.extend(self.paragraph_segment(segment, units[0]))
            elif segment.kind == "table":
                children.extend(self.table(segment, units))
            else:
                children.extend(self.block(segment, units[0], neighbour))
            added = children[start:]
            neighbour = next((child for child in reversed(added) if child.tag == w("p")), neighbour)
            for line in standalone[index]:
                children.append(self.new_paragraph(line, neighbour))
                neighbour = children[-1]
        # The body's own section properties must stay its last child.
        section = [child for child in children if child.tag == w("sectPr")]
        return [child for child in children if child.tag != w("sectPr")] + section

    def paragraph_segment(self, segment: Segment, lines: list[Line]) -> list[etree._Element]:
        assert segment.paragraph is not None
        if not lines:
            if segment.paragraph.element.find(f"{w('pPr')}/{w('sectPr')}") is None:
                return []
            # The paragraph ends a section: removing it would drop the section's page setup,
            # headers and footers, so it stays as an empty paragraph.
            return [self.paragraph(segment.paragraph, "", None)]
        return [self.paragraph(segment.paragraph, *_join(lines))]

    def block(
        self, segment: Segment, lines: list[Line], neighbour: etree._Element | None
    ) -> list[etree._Element]:
        texts = [text for text, _start in lines]
        if texts == segment.units[0] and lines and not self._ranges_in(*_span(lines)):
            return [segment.element]
        inner = segment.element.find(f".//{w('p')}")
        return [
            self.new_paragraph(line, inner if inner is not None else neighbour, False)
            for line in lines
        ]

    def table(self, segment: Segment, units: list[list[Line]]) -> list[etree._Element]:
        table = segment.element
        rows = table.findall(w("tr"))
        kept_rows = 0
        for row_index, row in enumerate(rows):
            lines = units[row_index]
            if not lines:
                table.remove(row)
                continue
            kept_rows += 1
            cells = row.findall(w("tc"))
            old_cell_lines = segment.cell_lines[row_index]
            fields_by_cell: list[list[Line]] = [[] for _ in cells]
            for line_index, (line, start) in enumerate(lines):
                tabs = [
                    cell[line_index].count("\t") if line_index < len(cell) else 0
                    for cell in old_cell_lines
                ]
                for cell_index, field_line in enumerate(_split_fields(line, start, tabs)):
                    fields_by_cell[cell_index].append(field_line)
            for cell_index, cell in enumerate(cells):
                self.cell(
                    cell,
                    segment.cells[row_index][cell_index],
                    old_cell_lines[cell_index],
                    fields_by_cell[cell_index],
                )
        return [table] if kept_rows else []

    def cell(
        self,
        cell: etree._Element,
        paragraphs: list[ReadParagraph] | None,
        old_lines: list[str],
        lines: list[Line],
    ) -> None:
        while len(lines) > len(old_lines) and lines and not lines[-1][0]:
            lines = lines[:-1]  # padding of a cell shorter than its row
        texts = [text for text, _start in lines]
        if texts == old_lines and not self._ranges_in(*_span(lines)) and paragraphs is None:
            return
        content = [child for child in cell if child.tag != w("tcPr")]
        template = cell.find(f".//{w('p')}")
        if paragraphs is None:
            new = [self.new_paragraph(line, template, False) for line in lines]
        else:
            new = []
            remaining = list(lines)
            for paragraph in paragraphs:
                count = len(paragraph.shown.split("\n"))
                taken, remaining = remaining[:count], remaining[count:]
                if taken:
                    new.append(self.paragraph(paragraph, *_join(taken)))
            for line in remaining:
                new.append(self.new_paragraph(line, new[-1] if new else template))
        if not new:
            new = [self.new_paragraph(("", 0), template, False)]
        for child in content:
            cell.remove(child)
        for child in new:
            cell.append(child)

    # --- paragraphs -------------------------------------------------------------------------

    def _ranges_in(self, start: int, end: int) -> list[_Range]:
        """Return the insertions within [start, end), relative to `start`."""
        found = []
        for item in self.ranges:
            if item.start < end and item.end > start:
                found.append(
                    _Range(
                        max(item.start, start) - start,
                        min(item.end, end) - start,
                        item.author,
                        item.date,
                    )
                )
        return found

    def _mark_insertion(self, position: int) -> _Range | None:
        """Return the insertion containing the line break at `position`, if there is one."""
        if position >= len(self.text):
            return None
        for item in self.ranges:
            if item.start <= position < item.end:
                return item
        return None

    def paragraph(self, paragraph: ReadParagraph, shown: str, start: int | None) -> etree._Element:
        """Return `paragraph` with the line text `shown` (label included) starting at `start`."""
        body_text, prefix_length, numbered = self._strip_label(paragraph, shown)
        if start is None:
            ranges: list[_Range] = []
            mark = None
        else:
            ranges = self._ranges_in(start + prefix_length, start + len(shown))
            mark = self._mark_insertion(start + len(shown))
        own = [
            (begin, end, author)
            for begin, end, author in _merge(paragraph.insertions)
            if author in self.authors
        ]
        wanted = _merge([(item.start, item.end, item.author) for item in ranges])
        own_mark = paragraph.mark_author if paragraph.mark_author in self.authors else None
        if (
            shown == paragraph.shown
            and own == wanted
            and own_mark == (mark.author if mark else None)
        ):
            return paragraph.element

        element = etree.Element(paragraph.element.tag, attrib=dict(paragraph.element.attrib))
        properties = paragraph.element.find(w("pPr"))
        if properties is not None:
            properties = copy.deepcopy(properties)
            _remove_all(properties, f"{w('rPr')}/{w('ins')}", w("pPrChange"))
            if not numbered:
                self._end_numbering(properties)
            element.append(properties)
        if mark is not None:
            self._mark_paragraph(element, mark)
        bookmarks = [child for child in paragraph.element if child.tag in (w("bookmarkStart"),)]
        for bookmark in bookmarks:
            element.append(copy.deepcopy(bookmark))
        runs = paragraph.runs
        foreign = runs is None or any(
            author is not None and author not in self.authors for _run, _text, author in runs
        )
        if runs is None or foreign or not runs:
            pieces = [(None, body_text)]
        else:
            pieces = _keep_formatting(runs, paragraph.text, body_text)
        self._append_runs(element, pieces, ranges)
        for child in paragraph.element:
            if child.tag == w("bookmarkEnd"):
                element.append(copy.deepcopy(child))
        return element

    def new_paragraph(
        self, line: Line, neighbour: etree._Element | None, numbered_like_neighbour: bool = True
    ) -> etree._Element:
        """Return a new paragraph for `line`, with the properties of `neighbour`."""
        text, start = line
        element = etree.Element(w("p"))
        if neighbour is not None and neighbour.find(w("pPr")) is not None:
            properties = copy.deepcopy(neighbour.find(w("pPr")))
            _remove_all(properties, w("sectPr"), f"{w('rPr')}/{w('ins')}", w("pPrChange"))
            element.append(properties)
            typed = TYPED_LABEL.match(text)
            if numbered_like_neighbour and self.numbering.numbering_of(neighbour) and typed:
                text = text[typed.end() :]
                start += typed.end()
            else:
                self._end_numbering(properties)
        ranges = self._ranges_in(start, start + len(text))
        mark = self._mark_insertion(start + len(text))
        if mark is not None:
            self._mark_paragraph(element, mark)
        self._append_runs(element, [(None, text)], ranges)
        return element

    def _strip_label(self, paragraph: ReadParagraph, shown: str) -> tuple[str, int, bool]:
        """Split the label off `shown`. Returns the text, the label's length and whether the
        paragraph stays numbered."""
        label = paragraph.label
        if label is None:
            return shown, 0, True
        if shown.startswith(label.prefix):
            return shown[len(label.prefix) :], len(label.prefix), True
        typed = TYPED_LABEL.match(shown)
        if label.text and shown.startswith(label.text):
            length = (
                len(label.text)
                + len(shown[len(label.text) :])
                - len(shown[len(label.text) :].lstrip(" \t"))
            )
            return shown[length:], length, True
        if typed:
            return shown[typed.end() :], typed.end(), True
        return shown, 0, False  # the label was deleted, so the numbering ends here

    def _end_numbering(self, properties: etree._Element) -> None:
        for num_pr in properties.findall(w("numPr")):
            properties.remove(num_pr)
        probe = etree.Element(w("p"))
        probe.append(copy.deepcopy(properties))
        if self.numbering.numbering_of(probe) is not None:
            # The style numbers the paragraph, and numId 0 turns that off for this paragraph.
            num_pr = etree.SubElement(properties, w("numPr"))
            etree.SubElement(num_pr, w("numId")).set(w("val"), "0")
            _move_num_pr(properties, num_pr)

    def _mark_paragraph(self, element: etree._Element, mark: _Range) -> None:
        properties = element.find(w("pPr"))
        if properties is None:
            properties = etree.Element(w("pPr"))
            element.insert(0, properties)
        run_properties = properties.find(w("rPr"))
        if run_properties is None:
            run_properties = etree.SubElement(properties, w("rPr"))
        insertion = etree.Element(w("ins"))
        self._set_revision(insertion, mark)
        run_properties.insert(0, insertion)

    def _set_revision(self, element: etree._Element, item: _Range) -> None:
        element.set(w("id"), str(self.next_id))
        self.next_id += 1
        element.set(w("author"), item.author)
        element.set(w("date"), item.date)

    def _append_runs(
        self,
        element: etree._Element,
        pieces: list[tuple[etree._Element | None, str]],
        ranges: list[_Range],
    ) -> None:
        """Append runs for `pieces` (run properties, text), wrapping text inside `ranges` in
        tracked insertions."""
        offset = 0
        container: etree._Element | None = None
        container_range: _Range | None = None
        for run_properties, text in pieces:
            for part, item in _split_by_ranges(text, offset, ranges):
                if not part:
                    continue
                if item is None:
                    parent = element
                    container = container_range = None
                else:
                    if container is None or container_range is not item:
                        container = etree.SubElement(element, w("ins"))
                        self._set_revision(container, item)
                        container_range = item
                    parent = container
                run = etree.SubElement(parent, w("r"))
                if run_properties is not None:
                    run.append(copy.deepcopy(run_properties))
                _append_text(run, part)
            offset += len(text)


def _pair_lines(old: list[str], new: list[str]) -> list[tuple[int | None, int | None]]:
    """Pair old and new line numbers, None where a line was removed or added.

    The unchanged lines at both ends are paired directly, because SequenceMatcher without its
    junk heuristic takes seconds on a few thousand lines with many empty ones, and most saves
    change a few lines in one place.

    NOTE: edits near both ends of a long document still leave SequenceMatcher the whole middle,
    which took about 3 s for 3,500 lines (338,000 characters) on a 2-core Linux container.
    """
    head = 0
    while head < min(len(old), len(new)) and old[head] == new[head]:
        head += 1
    tail = 0
    while (
        tail < min(len(old), len(new)) - head
        and old[len(old) - 1 - tail] == new[len(new) - 1 - tail]
    ):
        tail += 1
    pairs: list[tuple[int | None, int | None]] = [(k, k) for k in range(head)]
    middle_old = old[head : len(old) - tail]
    middle_new = new[head : len(new) - tail]
    matcher = difflib.SequenceMatcher(None, middle_old, middle_new, autojunk=False)
    for _tag, i1, i2, j1, j2 in matcher.get_opcodes():
        common = min(i2 - i1, j2 - j1)
        pairs.extend((head + i1 + k, head + j1 + k) for k in range(common))
        pairs.extend((head + i1 + k, None) for k in range(common, i2 - i1))
        pairs.extend((None, head + j1 + k) for k in range(common, j2 - j1))
    pairs.extend((len(old) - tail + k, len(new) - tail + k) for k in range(tail))
    return pairs


def _join(lines: list[Line]) -> tuple[str, int]:
    return "\n".join(text for text, _start in lines), lines[0][1]


def _span(lines: list[Line]) -> tuple[int, int]:
    if not lines:
        return 0, 0
    return lines[0][1], lines[-1][1] + len(lines[-1][0]) + 1


def _merge(items: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    merged: list[tuple[int, int, str]] = []
    for start, end, author in sorted(items):
        if end <= start:
            continue
        if merged and merged[-1][2] == author and merged[-1][1] >= start:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]), author)
        else:
            merged.append((start, end, author))
    return merged


def _split_fields(line: str, start: int, tabs: list[int]) -> list[Line]:
    """Split a table line into one piece per cell, given the tabs each cell's text had."""
    fields = line.split("\t")
    cells = max(len(tabs), 1)
    if len(fields) == sum(count + 1 for count in tabs):
        sizes = [count + 1 for count in tabs]
    else:
        sizes = [1] * (cells - 1) + [max(len(fields) - (cells - 1), 1)]
    pieces = []
    index = 0
    offset = start
    for size in sizes:
        text = "\t".join(fields[index : index + size])
        pieces.append((text, offset))
        offset += len(text) + 1
        index += size
    return pieces


def _keep_formatting(
    runs: list[tuple[etree._Element, str, str | None]], old_text: str, new_text: str
) -> list[tuple[etree._Element | None, str]]:
    """Give each character of `new_text` the run properties of the old character it matches.

    Inserted characters take the properties of the character before them, and replacing
    characters those of the first character they replace.
    """
    owners: list[int] = []
    for index, (_run, text, _author) in enumerate(runs):
        owners.extend([index] * len(text))
    new_owners: list[int] = []
    matcher = difflib.SequenceMatcher(None, old_text, new_text, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            new_owners.extend(owners[i1:i2])
            continue
        if tag == "replace" and i1 < len(owners):
            fill = owners[i1]
        elif new_owners:
            fill = new_owners[-1]
        elif i1 < len(owners):
            fill = owners[i1]
        else:
            fill = owners[-1] if owners else 0
        new_owners.extend([fill] * (j2 - j1))
    pieces: list[tuple[etree._Element | None, str]] = []
    position = 0
    while position < len(new_text):
        owner = new_owners[position]
        end = position
        while end < len(new_text) and new_owners[end] == owner:
            end += 1
        properties = runs[owner][0].find(w("rPr")) if runs else None
        if properties is not None:
            properties = copy.deepcopy(properties)
            _remove_all(properties, w("rPrChange"))
        pieces.append((properties, new_text[position:end]))
        position = end
    return pieces


def _split_by_ranges(
    text: str, offset: int, ranges: list[_Range]
) -> list[tuple[str, _Range | None]]:
    """Cut `text`, which starts at `offset` of its paragraph, where insertions start and end."""
    parts: list[tuple[str, _Range | None]] = []
    position = 0
    while position < len(text):
        absolute = offset + position
        inside = next((item for item in ranges if item.start <= absolute < item.end), None)
        if inside is not None:
            end = min(len(text), inside.end - offset)
        else:
            upcoming = [item.start - offset for item in ranges if item.start > absolute]
            end = min([len(text), *upcoming])
        parts.append((text[position:end], inside))
        position = end
    return parts


def _check_characters(text: str) -> None:
    """Raise DocxError for the first character that XML 1.0 cannot hold."""
    match = _XML_INVALID.search(text)
    if match is None:
        return
    line = text.count("\n", 0, match.start()) + 1
    raise DocxError(
        f"The text has the control character U+{ord(match.group()):04X} on line {line}, which a "
        "Word document cannot hold. Delete it, or save as .txt, and save again."
    )


def _append_text(run: etree._Element, text: str) -> None:
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            node = etree.SubElement(run, w("t"))
            node.text = "".join(buffer)
            node.set(XML_SPACE, "preserve")
            buffer.clear()

    for char in text:
        if char == "\t":
            flush()
            etree.SubElement(run, w("tab"))
        elif char == "\n":
            flush()
            etree.SubElement(run, w("br"))
        elif char == "\u2011":
            flush()
            etree.SubElement(run, w("noBreakHyphen"))
        elif char == "\v":  # what Word puts in plain text for a manual line break
            flush()
            etree.SubElement(run, w("br"))
        elif char == "\f":  # a page break in plain text
            flush()
            etree.SubElement(run, w("br")).set(w("type"), "page")
        else:
            buffer.append(char)
    flush()


def _remove_all(element: etree._Element, *paths: str) -> None:
    for path in paths:
        for found in element.findall(path):
            found.getparent().remove(found)


def _move_num_pr(properties: etree._Element, num_pr: etree._Element) -> None:
    """Put `num_pr` after pStyle, keepNext, keepLines, pageBreakBefore, framePr and widowControl,
    where the schema's element order wants it."""
    before = {"pStyle", "keepNext", "keepLines", "pageBreakBefore", "framePr", "widowControl"}
    properties.remove(num_pr)
    position = 0
    for index, child in enumerate(properties):
        if etree.QName(child).localname in before:
            position = index + 1
    properties.insert(position, num_pr)


def new_docx(text: str) -> bytes:
    """Return a new .docx package holding `text`, one paragraph per line, in the Normal style."""
    stream = io.BytesIO()
    docx.Document().save(stream)
    return render_docx(stream.getvalue(), text, [], set())
