"""Word list numbering: the label ("1.", "4.2", "(a)", "iii.") Word shows before a paragraph.

python-docx reads numbering.xml but does not compute labels, so this module follows the
WordprocessingML rules (ECMA-376 Part 1, section 17.9): a paragraph's `w:numPr` (or its style's)
names a `w:num`, which points to a `w:abstractNum` with one `w:lvl` per level. A level has a
start value, a number format (`w:numFmt`), a text pattern (`w:lvlText`, where "%2" is the
current value of level 2) and a suffix (`w:suff`: tab, space or nothing). `w:lvlOverride` in a
`w:num` can replace a level or restart it (`w:startOverride`).

Counters are kept per abstract numbering, so two `w:num` instances of one list continue each
other, as Word does. A `w:num` with a start override restarts its levels the first time it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
LEVELS = 9

# Symbol-font bullets are private-use characters; these are the glyphs they show.
_SYMBOL_BULLETS = {"\uf0b7": "•", "\uf0a7": "▪", "\uf0d8": "➢", "\uf0fc": "✓", "o": "o"}


def w(name: str) -> str:
    """Return the Clark name of `name` in the WordprocessingML namespace."""
    return f"{{{W_NS}}}{name}"


def _val(element: etree._Element | None, name: str = "val") -> str | None:
    if element is None:
        return None
    value = element.get(w(name))
    return str(value) if value is not None else None


def _int_val(element: etree._Element | None, default: int | None = None) -> int | None:
    value = _val(element)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return default


@dataclass
class Level:
    """One level of a list: how its counter starts and how its label is written."""

    start: int = 1
    number_format: str = "decimal"
    text: str | None = None  # w:lvlText pattern; None means no label
    suffix: str = "tab"  # "tab", "space" or "nothing"
    restart_after: int | None = None  # w:lvlRestart: 0 never restarts, None after any higher level
    legal: bool = False  # w:isLgl: lower levels are shown as decimal numbers

    @classmethod
    def parse(cls, element: etree._Element) -> Level:
        """Read a `w:lvl` element."""
        text_element = element.find(w("lvlText"))
        return cls(
            start=_int_val(element.find(w("start")), 1) or 0,
            number_format=_val(element.find(w("numFmt"))) or "decimal",
            text=_val(text_element) if text_element is not None else None,
            suffix=_val(element.find(w("suff"))) or "tab",
            restart_after=_int_val(element.find(w("lvlRestart"))),
            legal=element.find(w("isLgl")) is not None
            and _val(element.find(w("isLgl"))) not in ("0", "false"),
        )


@dataclass
class NumberingInstance:
    """A `w:num`: its abstract numbering and the levels it overrides."""

    abstract_id: str
    levels: dict[int, Level] = field(default_factory=dict)  # replaced levels
    start_overrides: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Label:
    """The label of one paragraph and the text Word puts between it and the paragraph."""

    text: str
    separator: str  # "\t", " " or ""

    @property
    def prefix(self) -> str:
        """The label as shown at the start of the paragraph's line."""
        return self.text + self.separator if self.text else ""


def format_number(value: int, number_format: str) -> str:
    """Write counter `value` in the Word number format `number_format`."""
    if number_format in ("lowerLetter", "upperLetter"):
        letter = chr(ord("a") + (value - 1) % 26) * ((value - 1) // 26 + 1) if value > 0 else ""
        return letter.upper() if number_format == "upperLetter" else letter
    if number_format in ("lowerRoman", "upperRoman"):
        roman = _roman(value)
        return roman.upper() if number_format == "upperRoman" else roman
    if number_format == "decimalZero":
        return f"{value:02d}"
    if number_format == "ordinal":
        return _ordinal(value)
    if number_format == "none":
        return ""
    # decimal, and formats this editor does not spell out (cardinalText, chicago, East Asian
    # counting systems) fall back to decimal digits.
    return str(value)


def _roman(value: int) -> str:
    if value <= 0:
        return str(value)
    numerals = [
        (1000, "m"),
        (900, "cm"),
        (500, "d"),
        (400, "cd"),
        (100, "c"),
        (90, "xc"),
        (50, "l"),
        (40, "xl"),
        (10, "x"),
        (9, "ix"),
        (5, "v"),
        (4, "iv"),
        (1, "i"),
    ]
    out = []
    for amount, numeral in numerals:
        count, value = divmod(value, amount)
        out.append(numeral * count)
    return "".join(out)


def _ordinal(value: int) -> str:
    ending = {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")
    if 10 <= value % 100 <= 20:
        ending = "th"
    return f"{value}{ending}"


class Numbering:
    """The lists of one document, with counters that advance paragraph by paragraph.

    Call `label` for each paragraph in document order. Paragraphs that are not numbered return
    None.
    """

    def __init__(
        self, numbering: etree._Element | None, styles: etree._Element | None = None
    ) -> None:
        self._abstract: dict[str, dict[int, Level]] = {}
        self._instances: dict[str, NumberingInstance] = {}
        self._style_numbering: dict[str, tuple[str | None, int | None]] = {}
        self._counters: dict[str, list[int | None]] = {}
        self._started_instances: set[str] = set()
        if numbering is not None:
            self._read_numbering(numbering)
        if styles is not None:
            self._read_styles(styles)

    def _read_numbering(self, root: etree._Element) -> None:
        for abstract in root.iter(w("abstractNum")):
            abstract_id = _val(abstract, "abstractNumId")
            if abstract_id is None:
                continue
            levels = {}
            for level in abstract.findall(w("lvl")):
                index = _int_val_attr(level, "ilvl")
                if index is not None and 0 <= index < LEVELS:
                    levels[index] = Level.parse(level)
            self._abstract[abstract_id] = levels
        for num in root.iter(w("num")):
            num_id = _val(num, "numId")
            abstract_id = _val(num.find(w("abstractNumId")))
            if num_id is None or abstract_id is None:
                continue
            instance = NumberingInstance(abstract_id)
            for override in num.findall(w("lvlOverride")):
                index = _int_val_attr(override, "ilvl")
                if index is None or not 0 <= index < LEVELS:
                    continue
                start = _int_val(override.find(w("startOverride")))
                if start is not None:
                    instance.start_overrides[index] = start
                level = override.find(w("lvl"))
                if level is not None:
                    instance.levels[index] = Level.parse(level)
            self._instances[num_id] = instance

    def _read_styles(self, root: etree._Element) -> None:
        based_on: dict[str, str] = {}
        direct: dict[str, tuple[str | None, int | None]] = {}
        for style in root.iter(w("style")):
            style_id = _val(style, "styleId")
            if style_id is None:
                continue
            parent = _val(style.find(w("basedOn")))
            if parent:
                based_on[style_id] = parent
            num_pr = style.find(f"{w('pPr')}/{w('numPr')}")
            if num_pr is not None:
                direct[style_id] = (
                    _val(num_pr.find(w("numId"))),
                    _int_val(num_pr.find(w("ilvl"))),
                )
        for style_id in set(based_on) | set(direct):
            seen = set()
            current: str | None = style_id
            while current is not None and current not in seen:
                seen.add(current)
                if current in direct:
                    self._style_numbering[style_id] = direct[current]
                    break
                current = based_on.get(current)

    def numbering_of(self, paragraph: etree._Element) -> tuple[str, int] | None:
        """Return the numId and level of `paragraph`, from its own properties or its style."""
        properties = paragraph.find(w("pPr"))
        style_id = None
        num_id: str | None = None
        level: int | None = None
        if properties is not None:
            style_id = _val(properties.find(w("pStyle")))
            num_pr = properties.find(w("numPr"))
            if num_pr is not None:
                num_id = _val(num_pr.find(w("numId")))
                level = _int_val(num_pr.find(w("ilvl")))
        if style_id is not None and style_id in self._style_numbering:
            style_num, style_level = self._style_numbering[style_id]
            num_id = num_id if num_id is not None else style_num
            level = level if level is not None else style_level
        if num_id is None or num_id == "0" or num_id not in self._instances:
            return None
        return num_id, min(max(level or 0, 0), LEVELS - 1)

    def _level(self, num_id: str, index: int) -> Level:
        instance = self._instances[num_id]
        if index in instance.levels:
            return instance.levels[index]
        return self._abstract.get(instance.abstract_id, {}).get(index, Level())

    def label(self, paragraph: etree._Element) -> Label | None:
        """Advance the counters for `paragraph` and return its label, or None if not numbered."""
        numbering = self.numbering_of(paragraph)
        if numbering is None:
            return None
        num_id, index = numbering
        instance = self._instances[num_id]
        counters = self._counters.setdefault(instance.abstract_id, [None] * LEVELS)
        if num_id not in self._started_instances:
            self._started_instances.add(num_id)
            for level_index, start in instance.start_overrides.items():
                # The next paragraph at that level shows `start`.
                counters[level_index] = start - 1
                for deeper in range(level_index + 1, LEVELS):
                    counters[deeper] = None

        level = self._level(num_id, index)
        current = counters[index]
        counters[index] = level.start if current is None else current + 1
        for deeper in range(index + 1, LEVELS):
            restart_after = self._level(num_id, deeper).restart_after
            if restart_after is None or (restart_after != 0 and index < restart_after):
                counters[deeper] = None

        if level.text is None:
            return Label("", "")
        text = level.text
        if level.number_format == "bullet":
            text = "".join(_SYMBOL_BULLETS.get(char, char) for char in text)
        else:
            for referenced in range(LEVELS, 0, -1):
                placeholder = f"%{referenced}"
                if placeholder not in text:
                    continue
                referenced_level = self._level(num_id, referenced - 1)
                value = counters[referenced - 1]
                if value is None:
                    value = referenced_level.start
                number_format = referenced_level.number_format
                if level.legal and number_format != "decimalZero":
                    number_format = "decimal"
                text = text.replace(placeholder, format_number(value, number_format))
        separator = {"tab": "\t", "space": " "}.get(level.suffix, "")
        return Label(text, separator)


def _int_val_attr(element: etree._Element, name: str) -> int | None:
    value = element.get(w(name))
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
