"""Pinned passages and the prompt window built around them.

A pinned passage is document text that every prompt contains wherever the cursor is, such as the
definitions section. `build_prompt_with_pins` puts the pinned passages first, in document order,
and fills the rest of the window with the text nearest the cursor, as
`kl3m_desk.generation.build_prompt` does without pins:

    <pinned passage>\\n\\n<pinned passage>\\n\\n<text before the cursor, from Prompt.start on>

When the window cannot hold everything, the oldest text that is not pinned is dropped. A pinned
passage that lies within the text nearest the cursor stays where it is and is not repeated ahead
of it. A pinned passage after the cursor goes ahead of that text too.

Each pinned passage is tokenized on its own, ahead of the rest. While the pins stay the same, the
first tokens of every prompt therefore stay the same, and the key/value cache of the previous
prompt keeps serving them (see kl3m_desk.engine.KVCache).

Positions are code point offsets in the document text with "\\n" line endings, as in
`kl3m_desk.review`. Nothing here imports Qt.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kl3m_desk.generation import (
    MAX_CHARS_PER_TOKEN,
    PinOverflow,
    Prompt,
    build_prompt,
    clamp_max_new_tokens,
)
from kl3m_desk.model import LoadedModel

# Tokens of a window that pinned passages never take, so that every prompt contains text before
# the cursor for the model to continue. A window of fewer than twice this many keeps half free.
NEAREST_TEXT_MIN_TOKENS = 64

# Written after each pinned passage, unless the passage already ends with a blank line or the
# text after it in the prompt follows it in the document as well.
PIN_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class PinnedPassage:
    """Document text that every prompt contains, wherever the cursor is."""

    start: int  # code point offset in the document text
    text: str

    @property
    def end(self) -> int:
        """Offset right after the passage's last character."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class _Block:
    """Pinned passages as they go ahead of the text nearest the cursor."""

    ids: tuple[int, ...]
    text: str


def merge_pins(pins: Sequence[PinnedPassage], cursor: int) -> list[PinnedPassage]:
    """Return `pins` in document order, with overlapping and touching passages joined.

    A passage that runs across `cursor` is split there, so that its part before the cursor can
    be part of the text nearest the cursor. Empty passages are left out. Raises ValueError for a
    negative start.
    """
    merged: list[PinnedPassage] = []
    for pin in sorted(pins, key=lambda item: item.start):
        if pin.start < 0:
            raise ValueError(f"A pinned passage starts at {pin.start}, before the document.")
        if not pin.text:
            continue
        if merged and pin.start <= merged[-1].end:
            last = merged[-1]
            overlap = last.end - pin.start
            merged[-1] = PinnedPassage(last.start, last.text + pin.text[overlap:])
        else:
            merged.append(pin)

    pieces: list[PinnedPassage] = []
    for pin in merged:
        if pin.start < cursor < pin.end:
            split = cursor - pin.start
            pieces.append(PinnedPassage(pin.start, pin.text[:split]))
            pieces.append(PinnedPassage(cursor, pin.text[split:]))
        else:
            pieces.append(pin)
    return pieces


def nearest_text_reserve(available: int) -> int:
    """Return how many of a window's `available` tokens pinned passages must leave free."""
    return max(1, min(NEAREST_TEXT_MIN_TOKENS, available // 2))


def build_prompt_with_pins(
    loaded: LoadedModel,
    text: str,
    max_new_tokens: int,
    anchor: int | None = None,
    history: Sequence[int] = (),
    pins: Sequence[PinnedPassage] = (),
) -> Prompt:
    """Tokenize the pinned passages and the end of `text` into one window.

    `text` is the document text before the cursor, and `pins` are passages anywhere in the
    document. Without pins this is `build_prompt(loaded, text, max_new_tokens, anchor, history)`.
    With them, the window contains the pinned passages first and the text nearest the cursor
    after them, and the oldest text that is not pinned is dropped when the window is full. `anchor`
    keeps the nearest text's start in place as `build_prompt` does, unless it lies inside a
    pinned passage. `history` is the previous prompt's ids and completion, as `build_prompt`
    takes it. Its part after this prompt's pinned passages serves the nearest text.

    Pinned passages that go ahead of the text may take the window's positions minus max new
    tokens and minus `nearest_text_reserve`. When they need more, whole passages are left out
    from the first in document order until the rest fit, and `Prompt.pin_overflow` records it.
    """
    max_new_tokens = clamp_max_new_tokens(loaded, max_new_tokens)
    cursor = len(text)
    pieces = merge_pins(pins, cursor)
    plain = build_prompt(loaded, text, max_new_tokens, anchor, history)
    available = loaded.max_positions - max_new_tokens
    budget = available - nearest_text_reserve(available)

    # Passages that the window without pins reaches need no room ahead of the text. A passage
    # joins those ahead once the room they take pushes the window's start past it, so this
    # repeats until every passage is either ahead of the text or inside it, once per passage
    # at most.
    ahead = [piece for piece in pieces if not _reaches(plain, piece)]
    while ahead:
        kept, overflow = _fit_pins(loaded.tokenizer, ahead, budget)
        if not kept:
            return dataclasses.replace(plain, pin_overflow=overflow)
        before = [piece for piece in kept if piece.end <= cursor]
        after = [piece for piece in kept if piece.start >= cursor]
        prompt = _anchored_window(loaded, text, max_new_tokens, anchor, history, before, after)
        if prompt is None:
            prompt = _new_window(loaded, text, max_new_tokens, before, after)
        missed = [piece for piece in pieces if piece not in ahead and not _reaches(prompt, piece)]
        if not missed:
            return dataclasses.replace(prompt, pin_overflow=overflow)
        ahead = sorted(ahead + missed, key=lambda piece: piece.start)
    return plain


def _reaches(prompt: Prompt, piece: PinnedPassage) -> bool:
    """Return True when the text nearest the cursor in `prompt` contains all of `piece`."""
    return prompt.start <= piece.start and piece.end <= prompt.text_length


def _fit_pins(
    tokenizer: Any, pieces: list[PinnedPassage], budget: int
) -> tuple[list[PinnedPassage], PinOverflow | None]:
    """Leave out whole passages, first in document order, until the rest take `budget` tokens."""
    needed = len(_block(tokenizer, pieces, None).ids)
    kept = list(pieces)
    while kept and len(_block(tokenizer, kept, None).ids) > budget:
        kept.pop(0)
    if len(kept) == len(pieces):
        return kept, None
    left_out = pieces[: len(pieces) - len(kept)]
    overflow = PinOverflow(
        needed_tokens=needed,
        budget_tokens=budget,
        pinned_count=len(pieces),
        left_out=tuple((piece.start, piece.end) for piece in left_out),
    )
    return kept, overflow


def _anchored_window(
    loaded: LoadedModel,
    text: str,
    max_new_tokens: int,
    anchor: int | None,
    history: Sequence[int],
    before: list[PinnedPassage],
    after: list[PinnedPassage],
) -> Prompt | None:
    """Return the window whose nearest text starts at `anchor`, or None when a new one is due."""
    cursor = len(text)
    if anchor is None or anchor >= cursor:
        return None
    if any(piece.start < anchor < piece.end for piece in before):
        return None
    pieces = [piece for piece in before if piece.end <= anchor] + after
    block = _block(loaded.tokenizer, pieces, anchor)
    count = len(block.ids)
    nearest_history = history[count:] if tuple(history[:count]) == block.ids else ()
    # build_prompt leaves room for max new tokens after the nearest text. Leaving room for the
    # pinned passages too applies its rules to the space the pins leave: the window grows up to
    # the engine's capacity, and a new one is cut when less than half a window remains.
    nearest = build_prompt(loaded, text, max_new_tokens + count, anchor, nearest_history)
    if nearest.start != anchor:
        return None
    prompt = _assemble(loaded, cursor, max_new_tokens, anchor, nearest.ids, pieces)
    if prompt.used + max_new_tokens > loaded.engine.capacity:
        return None
    return prompt


def _new_window(
    loaded: LoadedModel,
    text: str,
    max_new_tokens: int,
    before: list[PinnedPassage],
    after: list[PinnedPassage],
) -> Prompt:
    """Return a window that starts the nearest text as early as the pinned passages allow.

    The nearest text never starts inside a pinned passage. The gaps between the pinned passages
    before the cursor are tried from the cursor back. While a whole gap and everything after it
    fit, the window reaches further back, and the pinned passage before the gap moves from
    ahead of the text into it. In the first gap that does not fit, the window starts at the
    token that `build_prompt` would start at with the room that is left.
    """
    tokenizer = loaded.tokenizer
    cursor = len(text)
    available = loaded.max_positions - max_new_tokens
    best = _assemble(loaded, cursor, max_new_tokens, cursor, (), before + after)
    for index in range(len(before), -1, -1):
        gap_start = before[index - 1].end if index > 0 else 0
        gap_end = before[index].start if index < len(before) else cursor
        pieces = before[:index] + after
        reserved = len(_block(tokenizer, pieces, None).ids)
        room = available - reserved
        if cursor - gap_start <= room * MAX_CHARS_PER_TOKEN:
            nearest_ids = _encode(tokenizer, text[gap_start:])
            whole = _assemble(loaded, cursor, max_new_tokens, gap_start, nearest_ids, pieces)
            if whole.used <= available:
                best = whole
                continue
        cut = build_prompt(loaded, text, max_new_tokens + reserved)
        if gap_start < cut.start <= gap_end and cut.start < cursor:
            inside = _assemble(loaded, cursor, max_new_tokens, cut.start, cut.ids, pieces)
            if inside.used <= available:
                best = inside
        break
    return best


def _assemble(
    loaded: LoadedModel,
    cursor: int,
    max_new_tokens: int,
    start: int,
    nearest_ids: Sequence[int],
    pieces: list[PinnedPassage],
) -> Prompt:
    """Return the prompt of `pieces` followed by the text from `start` to `cursor`."""
    block = _block(loaded.tokenizer, pieces, start)
    return Prompt(
        ids=block.ids + tuple(nearest_ids),
        available=loaded.max_positions - max_new_tokens,
        text_length=cursor,
        start=start,
        pinned=tuple((piece.start, piece.end) for piece in pieces),
        pinned_text=block.text,
        pinned_tokens=len(block.ids),
    )


def _block(tokenizer: Any, pieces: Sequence[PinnedPassage], following: int | None) -> _Block:
    """Tokenize `pieces` each on its own, with separators where the document text breaks off.

    A separator follows each passage unless the next passage, or the text at `following`,
    continues the document right after it.
    """
    ids: list[int] = []
    parts: list[str] = []
    for index, piece in enumerate(pieces):
        next_start = pieces[index + 1].start if index + 1 < len(pieces) else following
        part = piece.text if next_start == piece.end else piece.text + _separator_after(piece.text)
        ids.extend(_pinned_ids(tokenizer, part))
        parts.append(part)
    return _Block(tuple(ids), "".join(parts))


def _separator_after(text: str) -> str:
    if text.endswith("\n\n"):
        return ""
    if text.endswith("\n"):
        return "\n"
    return PIN_SEPARATOR


# NOTE: the cache keeps a reference to the tokenizer of up to 64 entries, so after switching
# models the previous tokenizer stays in memory until its entries are evicted.
@functools.lru_cache(maxsize=64)
def _pinned_ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    """Return the token ids of a pinned passage, cached because pins change less than the text."""
    return _encode(tokenizer, text)


def _encode(tokenizer: Any, text: str) -> tuple[int, ...]:
    if not text:
        return ()
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _touching_groups(spans: Sequence[tuple[int, int]]) -> int:
    """Return how many runs of touching ranges `spans` (in document order) form."""
    groups = 0
    previous_end: int | None = None
    for start, end in spans:
        if start != previous_end:
            groups += 1
        previous_end = end
    return groups


def describe_prompt(prompt: Prompt) -> str:
    """Return one line for the status bar: tokens used and free, pinned passages, dropped text."""
    if prompt.used <= prompt.available:
        free = prompt.available - prompt.used
        text = f"Context: {prompt.used:,} of {prompt.available:,} prompt tokens used, {free:,} free"
    else:
        # An anchored window grows past a new window's size while the user writes on.
        text = (
            f"Context: {prompt.used:,} prompt tokens; the window grew as you wrote, past the "
            f"{prompt.available:,} a new window starts with"
        )
    if prompt.pinned:
        passages = _plural(_touching_groups(prompt.pinned), "pinned passage")
        text += f"; {passages}, {prompt.pinned_tokens:,} tokens"
    if prompt.pin_overflow is not None:
        text += f"; {_plural(len(prompt.pin_overflow.left_out), 'pinned passage')} left out"
    if prompt.dropped_characters:
        text += f"; earliest {prompt.dropped_characters:,} characters dropped"
    return text


def pin_overflow_message(prompt: Prompt) -> str:
    """Return what was left out of `prompt` because of pinned passages and what to do about it.

    Returns "" when nothing was left out.
    """
    overflow = prompt.pin_overflow
    if overflow is None:
        return ""
    reserve = prompt.available - overflow.budget_tokens
    left_out = len(overflow.left_out)
    if left_out == overflow.pinned_count:
        if left_out == 1:
            subject = "The pinned passage was"
        else:
            subject = f"All {left_out:,} pinned passages were"
    else:
        subject = f"The first {left_out:,} of {overflow.pinned_count:,} pinned passages"
        subject += " was" if left_out == 1 else " were"
    return (
        f"The pinned passages need {overflow.needed_tokens:,} tokens, but only "
        f"{overflow.budget_tokens:,} fit: the window holds {prompt.available:,} tokens besides "
        f"max new tokens, and at least {reserve:,} go to the text before the cursor. {subject} "
        "left out of the prompt. Unpin or shorten a pinned passage, or lower Max new tokens."
    )
