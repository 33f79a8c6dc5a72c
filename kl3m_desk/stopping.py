"""Stop rules that end a completion where a lawyer would, for a text that arrives piece by piece.

A completion can stop after its first finished sentence, at the end of its first paragraph, or just
before the next clause number ("(b)", "2.1", "Section 3", "ARTICLE IV"). Nothing here touches Qt or
the model: `StopFilter` sits between the incremental detokenizer and the caller's `on_text`.

Every cut falls between a non-space character and the whitespace after it. The inserted text
therefore ends with the period (or closing quote or bracket) of the sentence, the last character
of the paragraph, or the last character before the next clause number. The space or line break
after that point is left out, together with the clause number and its indentation. The cursor
then sits right after the finished text and the document gets no dangling blank line. A clause
number, or whitespace, at the very start of a completion never stops it, so a Generate from there
writes the next paragraph or clause with the line break the model chooses. Because cuts fall only
next to whitespace, a cut never splits a character or a combining sequence.

Text already given to the editor cannot be taken back, so `StopFilter` holds back the tail that a
rule could still cut. That tail is the whitespace at the end of the text. After a possible sentence
end or a line break, it also takes in the next few words, until the rules can decide whether a
sentence ends or a clause number starts there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import ascii_lowercase
from typing import Literal

StopAt = Literal["none", "sentence", "paragraph", "clause"]
RuleStopReason = Literal["sentence", "paragraph", "clause"]
STOP_AT_CHOICES: tuple[StopAt, ...] = ("none", "sentence", "paragraph", "clause")


def _words(text: str) -> frozenset[str]:
    """Return the whitespace-separated words of `text`, for the word lists below."""
    return frozenset(text.split())


_STOP_REASONS: dict[StopAt, RuleStopReason] = {
    "sentence": "sentence",
    "paragraph": "paragraph",
    "clause": "clause",
}

# The rules look back at most this many characters of the document before the cursor: enough for
# the line that a completion continues and to see whether the document separates paragraphs with
# blank lines.
CONTEXT_CHARACTERS = 1000

_LINE_BREAK_CHARACTERS = "\n\r\u2028\u2029\x0b\x0c\x85"
_LINE_BREAK = r"(?:\r\n|\r(?!\n)|[\n\u2028\u2029\x0b\x0c\x85])"
_BLANK_LINE = re.compile(rf"{_LINE_BREAK}[^\S{_LINE_BREAK_CHARACTERS}]*{_LINE_BREAK}")
_SPACE = re.compile(r"\s+")
_TOKEN = re.compile(r"\S+")
_NON_SPACE = re.compile(r"\S")
_WORD = re.compile(r"[^\W\d_]+")

_CLOSERS = "\"'”’)]»"
_OPENERS = "\"'“‘([«"

# Clause number forms. Roman numerals go up to 39 (xxxix), far beyond any real list.
_ROMAN_LOWER = r"(?=[ivx])x{0,3}(?:ix|iv|v?i{0,3})"
_ROMAN_UPPER = r"(?=[IVX])X{0,3}(?:IX|IV|V?I{0,3})"
_DOUBLED = "|".join(letter * 2 for letter in ascii_lowercase)
_ENUMERATOR = rf"(?:\d{{1,3}}|[A-Za-z]|{_DOUBLED}|{_ROMAN_LOWER}|{_ROMAN_UPPER})"
# "(b)", "(iv)", "(2)(i)"
_PARENTHESIZED = re.compile(rf"(?:\({_ENUMERATOR}\))+")
# "b)", "1)", "iii)": only at the start of a line
_CLOSING_PARENTHESIS = re.compile(rf"{_ENUMERATOR}\)")
# "2.", "2.1.", "1.0.", "52.203-3."
_NUMBER_WITH_PERIOD = re.compile(r"\d{1,3}(?:\.\d{1,3})*(?:-\d{1,3})?\.")
# "2.1", "1.0", "52.203-3": at least two parts, so a plain "5" or a year is never one
_DOTTED_NUMBER = re.compile(r"\d{1,3}(?:\.\d{1,3})+(?:-\d{1,3})?")
# "A.", "b.", "IV.": only at the start of a line
_LETTER_WITH_PERIOD = re.compile(rf"(?:[A-Za-z]|{_ROMAN_LOWER}|{_ROMAN_UPPER})\.")
_KEYWORDS = _words("Section SECTION Sec. SEC. Article ARTICLE Art. ART. Clause CLAUSE Part PART §")
_KEYWORD_NUMBER = re.compile(
    rf"(?:\d{{1,3}}(?:\.\d{{1,3}})*[A-Za-z]?|{_ROMAN_UPPER})(?:[.:]|[—–]\S*)?"
)
_MARKDOWN_HEADING = re.compile(r"#{1,6}")
_HEADED_NUMBER = re.compile(
    r"(?:#{1,6}[ \t]+)?"
    rf"(?:{_NUMBER_WITH_PERIOD.pattern}|{_DOTTED_NUMBER.pattern}|{_PARENTHESIZED.pattern}"
    rf"|{_LETTER_WITH_PERIOD.pattern}"
    rf"|(?:{'|'.join(re.escape(keyword) for keyword in _KEYWORDS)})[ \t\u00a0]+"
    rf"{_KEYWORD_NUMBER.pattern})"
    r"[ \t\u00a0]+(?P<heading>[^.?!;:\n\r]{1,80})\."
)
_SENTENCE_END_IN_LINE = re.compile(r"[.?!][\"'”’)\]]*[ \t\u00a0]+")

# A word after a clause-number look-alike that shows a cross-reference, not a new provision:
# "(a)(1) through (a)(3)", "Part 1 and ...". List items may start with any other word, even in
# lower case ("(a) to deliver ...", "i) conflict with ...").
_ENUMERATOR_GUARDS = _words(
    """
    of and or nor through thru above below hereof herein hereunder thereof thereunder hereto
    is are was were
    """
)
# "SECTION 5 OR ...", "SECTION 2 SHALL ...": a section cited as the subject in capitals. A cited
# section in ordinary text ("Section 4 of ...") is recognized by the lower-case word after it.
_KEYWORD_GUARDS = _ENUMERATOR_GUARDS | _words(
    "shall will may must has have applies apply provides sets"
)

# Abbreviations that a number, name or example always follows, so their period never ends a
# sentence ("No. 5", "e.g. agile", "35 U.S.C. 181"). Compared in lower case.
_PREFIX_ABBREVIATIONS = _words(
    """
    e.g i.e cf viz vs v a.k.a f.k.a p.o u.s.c u.s.c.a c.f.r sec secs para paras subpara subd
    subsec cl ch chap pt fig figs vol pp fn exh sched approx incl attn tel ext mr mrs ms
    messrs mmes dr prof hon rev capt sgt lt col fed reg regs stat supp cir ct civ crim proc
    ann admin dist div dept const amend pub
    """
)
# Prefix abbreviations that are also ordinary words in lower case ("no", "art", "mass"), so only
# their capitalized and upper-case forms count: "No. 5", "Art. 3", "Minn. Stat.", "Nov. 17".
_CAPITALIZED_PREFIX_ABBREVIATIONS = frozenset(
    form
    for word in _words(
        """
    No Nos Art Arts Ex Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec Ala Ariz Ark Cal
    Calif Colo Conn Del Fla Ga Ill Ind Kan Ky La Mass Md Mich Minn Miss Mo Mont Neb Nev Okla
    Pa Tenn Tex Va Vt Wash Wis Wyo
    """
    )
    for form in (word, word.upper())
)
# Abbreviations that end names and lists ("Vivint, Inc.", "et al."). They end a sentence when a
# capitalized word follows them. Compared in lower case.
_SUFFIX_ABBREVIATIONS = _words(
    """
    inc corp co ltd llc l.l.c llp l.l.p lp l.p plc p.l.c p.c p.a n.a s.a n.v b.v a.g s.p.a
    s.r.l gmbh pty bros assn etc al seq jr sr esq ave blvd st rd ste hwy
    """
)
# Words that start a sentence. A dotted initialism such as "U.S." or "N.E." ends a sentence only
# before one of them ("... in the U.S. The Supplier"), since before any other capitalized word it
# is an adjective or part of an address ("U.S. Government", "N.E. Vinton").
_SENTENCE_OPENERS = _words(
    """
    the this that these those each either neither any all no none nothing if in on at for
    from to as by upon unless except notwithstanding such it its we our you your they their
    he she his her there where when whereas however accordingly further furthermore moreover
    provided subject without with within after before during under a an both every only but
    thus therefore pursuant following
    """
)
# Words after which a single capital letter is a label ("Exhibit A.") and not a name's initial.
_LABEL_WORDS = _words(
    """
    exhibit schedule annex appendix attachment addendum part article section clause class
    series tranche plan option column item form phase level tier grade type group
    """
)
# Words of a run-in heading ("1. GRANT.", "2. Non-Competition.") that need not be capitalized.
_HEADING_CONNECTORS = frozenset(
    {"and", "or", "of", "the", "to", "for", "in", "on", "by", "with", "a", "an", "as", "at"}
)
_INITIALISM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_SINGLE_CAPITAL = re.compile(r"[A-Z]")


def _has_line_break(text: str) -> bool:
    return any(character in _LINE_BREAK_CHARACTERS for character in text)


def _skip_space(text: str, position: int) -> int:
    """Return the index of the first non-space character at or after `position`."""
    match = _NON_SPACE.search(text, position)
    return match.start() if match else len(text)


def _token_before(text: str, end: int) -> tuple[int, str]:
    """Return the start and text of the run of non-space characters that ends at `end`."""
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return start, text[start:end]


def _previous_token(text: str, start: int) -> tuple[int, str]:
    """Return the token before the whitespace that precedes `start`, or (start, "") at the top."""
    end = start
    while end > 0 and text[end - 1].isspace():
        end -= 1
    if end == start:
        return start, ""
    return _token_before(text, end)


def _starts_line(text: str, start: int) -> bool:
    """True when only indentation or Markdown heading marks precede `start` on its line.

    The start of the text counts as a line start, because the text may begin mid-document.
    """
    line_start = max(text.rfind(character, 0, start) for character in _LINE_BREAK_CHARACTERS) + 1
    prefix = text[line_start:start]
    return re.fullmatch(r"[ \t\u00a0]*(?:#{1,6}[ \t]+)?", prefix) is not None


def _strip_closers(token: str) -> str:
    return token.rstrip(_CLOSERS)


def _abbreviation_word(core: str) -> str:
    """Return the word before the final period of `core`, without opening quotes or brackets."""
    return core[:-1].lstrip(_OPENERS)


def _is_prefix_abbreviation(word: str) -> bool:
    return word.lower() in _PREFIX_ABBREVIATIONS or word in _CAPITALIZED_PREFIX_ABBREVIATIONS


def _follows_sentence_end(text: str, start: int) -> bool:
    """True when the token before `start` ends in terminal punctuation that is no abbreviation.

    This is the quick test used to place clause numbers. It does not look ahead, unlike
    `_sentence_end`.
    """
    _, previous = _previous_token(text, start)
    if not previous:
        return False
    core = _strip_closers(previous)
    if core.endswith(("?", "!")):
        return True
    return core.endswith(".") and not _is_prefix_abbreviation(_abbreviation_word(core))


def _is_clause_number_period(text: str, start: int, end: int) -> bool:
    """True when the period at `end` closes a clause number ("1.", "A.", "Section 3.")."""
    token = text[start:end]
    if _starts_line(text, start) and (
        _NUMBER_WITH_PERIOD.fullmatch(token) or _LETTER_WITH_PERIOD.fullmatch(token)
    ):
        return True
    if _NUMBER_WITH_PERIOD.fullmatch(token) and _follows_sentence_end(text, start):
        return True
    keyword_start, keyword = _previous_token(text, start)
    return (
        keyword in _KEYWORDS
        and _KEYWORD_NUMBER.fullmatch(token) is not None
        and (_starts_line(text, keyword_start) or _follows_sentence_end(text, keyword_start))
    )


def _is_heading(words: list[str]) -> bool:
    """True for up to eight capitalized words, like "GRANT" or "Representations of IBM"."""
    if not 1 <= len(words) <= 8 or any(quote in word for word in words for quote in '"“”'):
        return False
    for position, raw in enumerate(words):
        word = raw.strip(_OPENERS + _CLOSERS + ",")
        if not word:
            continue
        if position > 0 and word.lower() in _HEADING_CONNECTORS:
            continue
        if not (word[0].isupper() or word[0].isdigit()):
            return False
    return True


def _ends_run_in_heading(text: str, end: int) -> bool:
    """True when the period at `end` ends a short heading after a clause number: "1. GRANT."."""
    line_start = max(text.rfind(character, 0, end) for character in _LINE_BREAK_CHARACTERS) + 1
    line_start = max(line_start, end - 300)
    starts = [line_start + len(text[line_start:end]) - len(text[line_start:end].lstrip())]
    starts += [match.end() for match in _SENTENCE_END_IN_LINE.finditer(text, line_start, end)]
    for start in starts:
        match = _HEADED_NUMBER.fullmatch(text, start, end)
        if match and _is_heading(match.group("heading").split()):
            return True
    return False


def _next_word(text: str, position: int, final: bool) -> tuple[str, bool]:
    """Return the letters at `position` and whether the word is complete."""
    match = _WORD.match(text, position)
    if match is None:
        return "", True
    return match.group(), match.end() < len(text) or final


def _sentence_end(text: str, start: int, end: int, final: bool) -> bool | None:
    """Decide whether a sentence ends right before the whitespace `text[start:end]`.

    Returns None while the decision depends on text that has not arrived yet.
    """
    complete = end < len(text) or final
    token_start, token = _token_before(text, start)
    core = _strip_closers(token)
    if core.endswith(("?", "!")):
        return True
    if not core.endswith(".") or _is_clause_number_period(
        text, token_start, token_start + len(core)
    ):
        return False
    line_break = _has_line_break(text[start:end])
    if _ends_run_in_heading(text, token_start + len(core)):
        # "1. GRANT. Grantor hereby grants ...": the sentence goes on after a run-in heading,
        # unless the heading is on a line of its own.
        if line_break:
            return True
        return False if complete else None

    word = _abbreviation_word(core)
    if _is_prefix_abbreviation(word):
        return False
    if line_break:
        return True
    if word.lower() in _SUFFIX_ABBREVIATIONS or word.endswith("."):
        if not complete:
            return None
        return end == len(text) or text[end].isupper()
    if _SINGLE_CAPITAL.fullmatch(word):
        _, label = _previous_token(text, token_start)
        if label.strip(_OPENERS).lower() not in _LABEL_WORDS:
            return False  # a name's initial: "Diane L. Conner"
    elif _INITIALISM.fullmatch(word):
        if not complete:
            return None
        if end == len(text):
            return True
        following, following_complete = _next_word(text, end, final)
        if not following or not following[0].isupper():
            return False
        if not following_complete:
            if any(opener.startswith(following.lower()) for opener in _SENTENCE_OPENERS):
                return None
            return False
        return following.lower() in _SENTENCE_OPENERS
    return True


def _list_item_end(text: str, start: int, end: int, final: bool) -> bool | None:
    """Decide whether a list item or its lead-in ends before `text[start:end]`.

    "...construction work;", "...; or", "as follows:" and "apply to—" end a unit of drafting
    when a line break follows them.
    """
    _, token = _token_before(text, start)
    core = _strip_closers(token)
    ends_item = core.endswith((";", ":", "—", "–"))
    if not ends_item and core.lower() in ("and", "or", "and/or"):
        _, previous = _previous_token(text, start - len(token))
        ends_item = _strip_closers(previous).endswith(";")
    if not ends_item:
        return False
    if _has_line_break(text[start:end]):
        return True
    return False if end < len(text) or final else None


def _paragraph_break(
    text: str, start: int, end: int, final: bool, blank_lines: bool
) -> bool | None:
    """Decide whether the whitespace `text[start:end]` separates two paragraphs.

    When the document before the cursor has a blank line (`blank_lines`), only a blank line ends
    a paragraph, because its single line breaks are wrapped lines or address blocks. Otherwise
    every line break does.
    """
    space = text[start:end]
    if _BLANK_LINE.search(space) if blank_lines else _has_line_break(space):
        return True
    if end < len(text) or final:
        return False
    return None


def _could_start_number(partial: str, line_start: bool) -> bool:
    """True when more characters could turn `partial` into a clause number token."""
    if any(keyword.startswith(partial) for keyword in _KEYWORDS):
        return True
    if partial.startswith("("):
        return re.fullmatch(r"(?:\([0-9A-Za-z]{1,6}\))*\(?[0-9A-Za-z]{0,6}", partial) is not None
    if partial[0].isdigit():
        return len(partial) <= 16 and re.fullmatch(r"\d[\d.\-)]*", partial) is not None
    if line_start:
        if _MARKDOWN_HEADING.fullmatch(partial):
            return True
        return re.fullmatch(r"(?:[A-Za-z]|[ivx]{1,7}|[IVX]{1,7})[.)]?", partial) is not None
    return False


def _number_followed(
    text: str,
    position: int,
    line_start: bool,
    lower_case_allowed: bool,
    guards: frozenset[str],
    final: bool,
) -> bool | None:
    """Decide whether what follows the clause number ending at `position` starts a provision.

    After a sentence end (`line_start` False) the next word must be capitalized. A word in
    `guards` shows a cross-reference ("(a)(1) through (a)(3)").
    """
    space_end = _skip_space(text, position)
    if _has_line_break(text[position:space_end]):
        return True  # the number is alone on its line: "ARTICLE IV", "(2)"
    if space_end == len(text):
        return True if final else None
    first = text[space_end]
    if not line_start and not first.isupper():
        return False
    if not lower_case_allowed and first.islower():
        return False
    word, complete = _next_word(text, space_end, final)
    if not word:
        return True
    if complete:
        return word.lower() not in guards
    if any(guard.startswith(word.lower()) for guard in guards):
        return None
    return True


def _clause_number(text: str, position: int, line_start: bool, final: bool) -> bool | None:
    """Decide whether a clause number starts at `position`.

    At the start of a line every form counts. After a sentence end on the same line, only the
    forms that cannot be a name's initial count ("(b)", "2.1", "3.", "Section 3"), and the next
    word must be capitalized.

    NOTE: the rules do not track nesting, so the first sub-clause ("(1)" inside clause (b)) also
    ends a clause. A name's initial at the start of a wrapped line ("S. Smith") reads as "S.".
    """
    position = _skip_space(text, position)
    token = _TOKEN.match(text, position)
    if token is None:
        return False if final else None
    if token.end() == len(text) and not final:
        return None if _could_start_number(token.group(), line_start) else False
    if line_start and _MARKDOWN_HEADING.fullmatch(token.group()):
        space_end = _skip_space(text, token.end())
        if _has_line_break(text[token.end() : space_end]):
            return False
        return _clause_number(text, space_end, line_start, final)

    word = token.group()
    if word in _KEYWORDS:
        space_end = _skip_space(text, token.end())
        if _has_line_break(text[token.end() : space_end]):
            return False
        number = _TOKEN.match(text, space_end)
        if number is None:
            return False if final else None
        if number.end() == len(text) and not final:
            digits_or_roman = re.fullmatch(r"[\dIVX.]{1,12}", number.group())
            return None if digits_or_roman else False
        if not _KEYWORD_NUMBER.fullmatch(number.group()):
            return False
        return _number_followed(text, number.end(), line_start, False, _KEYWORD_GUARDS, final)

    if _PARENTHESIZED.fullmatch(word) or _NUMBER_WITH_PERIOD.fullmatch(word):
        return _number_followed(
            text, token.end(), line_start, line_start, _ENUMERATOR_GUARDS, final
        )
    if _DOTTED_NUMBER.fullmatch(word):
        # "2.1 The ..." starts a clause, "2.5 percent" does not.
        return _number_followed(text, token.end(), line_start, False, _ENUMERATOR_GUARDS, final)
    if line_start and (_CLOSING_PARENTHESIS.fullmatch(word) or _LETTER_WITH_PERIOD.fullmatch(word)):
        return _number_followed(text, token.end(), line_start, True, _ENUMERATOR_GUARDS, final)
    return False


def _combine(*decisions: bool | None) -> bool | None:
    if any(decision is True for decision in decisions):
        return True
    if any(decision is None for decision in decisions):
        return None
    return False


@dataclass(frozen=True)
class _Scan:
    cut: int | None  # index in the text where the completion ends, when a rule fired
    settled: int  # text before this index can no longer be cut
    resume: int  # the whitespace before this index was checked and no rule cuts there


class StopFilter:
    """Filter that passes the streamed text of a completion on up to where `stop_at` ends it.

    `push` returns the part of the text that no rule can cut any more, and `finish` returns the
    rest once the model has stopped. After a rule fires, `stop_reason` names it and both return
    "". The pieces returned join to the completion cut where the rule fired, or to the whole
    completion when none did. With `stop_at` "none" every piece passes through unchanged.
    """

    def __init__(self, stop_at: StopAt, context: str = "") -> None:
        if stop_at not in STOP_AT_CHOICES:
            raise ValueError(
                f"Invalid stop option {stop_at!r}; use one of {', '.join(STOP_AT_CHOICES)}."
            )
        self.stop_at = stop_at
        context = context[-CONTEXT_CHARACTERS:] if stop_at != "none" else ""
        self._text = context
        self._start = len(context)
        self._emitted = self._start
        self._resume = self._start
        self._content_start: int | None = None  # first non-space character of the completion
        self._blank_lines = _BLANK_LINE.search(context) is not None
        self.stop_reason: RuleStopReason | None = None

    @property
    def text(self) -> str:
        """The completion text passed on so far."""
        return self._text[self._start : self._emitted]

    def push(self, piece: str) -> str:
        """Add `piece` and return the text that can be shown now ("" while it is held back)."""
        return self._release(piece, final=False)

    def finish(self, piece: str = "") -> str:
        """Add the last `piece`, decide what is still held back and return the rest to show."""
        return self._release(piece, final=True)

    def _release(self, piece: str, final: bool) -> str:
        if self.stop_reason is not None:
            return ""
        if self.stop_at == "none":
            self._emitted += len(piece)
            self._text += piece
            return piece
        self._text += piece
        scan = self._scan(final)
        if scan.cut is not None:
            end = scan.cut
            self.stop_reason = _STOP_REASONS[self.stop_at]
        else:
            end = len(self._text) if final else scan.settled
            self._resume = scan.resume
        released = self._text[self._emitted : end]
        self._emitted = end
        return released

    def _scan(self, final: bool) -> _Scan:
        text = self._text
        if self._content_start is None:
            content = _NON_SPACE.search(text, self._start)
            if content is None:
                return _Scan(None, len(text), len(text))
            self._content_start = content.start()
        resume = max(self._resume, self._content_start + 1)
        for match in _SPACE.finditer(text, resume):
            start, end = match.span()
            decision = self._decide(start, end, final)
            if decision is True:
                return _Scan(start, start, start)
            if decision is None:
                return _Scan(None, start, start)
            resume = end
        return _Scan(None, len(text), resume)

    def _decide(self, start: int, end: int, final: bool) -> bool | None:
        """Decide whether the completion ends before the whitespace `text[start:end]`."""
        text = self._text
        complete = end < len(text) or final
        line_break = _has_line_break(text[start:end])
        if self.stop_at == "clause":
            if not complete:
                return None  # the space may still grow into a line break before a number
            if line_break:
                return _clause_number(text, end, True, final)
            sentence = _sentence_end(text, start, end, final)
            if sentence is not True:
                return sentence
            return _clause_number(text, end, False, final)

        paragraph = _paragraph_break(text, start, end, final, self._blank_lines)
        numbered = None if not complete else False
        if complete and line_break:
            numbered = _clause_number(text, end, True, final)
        if self.stop_at == "paragraph":
            return _combine(paragraph, numbered)
        return _combine(
            paragraph,
            numbered,
            _sentence_end(text, start, end, final),
            _list_item_end(text, start, end, final),
        )


def cut_completion(
    completion: str, stop_at: StopAt, context: str = ""
) -> tuple[str, RuleStopReason | None]:
    """Return `completion` cut as `StopFilter` cuts it when it arrives whole, and the rule that cut.

    `context` is the document text before the cursor. The reason is None when no rule fired.
    """
    stop_filter = StopFilter(stop_at, context)
    text = stop_filter.finish(completion)
    return text, stop_filter.stop_reason
