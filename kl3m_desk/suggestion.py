"""Inline suggestions: a completion shown after the cursor, inserted only when accepted.

Nothing here imports Qt. `Suggestion` contains the model's text as it streams in, counts how much of
it was accepted, and splits off the next word or sentence to accept. `SuggestionSettings` are the
saved options: whether Generate shows suggestions, whether they also appear after a pause in
typing, and how long that pause is.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from kl3m_desk.stopping import StopFilter, cut_completion

log = logging.getLogger(__name__)

# Pause in typing, in milliseconds, before an automatic suggestion starts.
MIN_DELAY_MS = 300
MAX_DELAY_MS = 5000
DEFAULT_DELAY_MS = 1000

# Whitespace, then one word: a run of characters that are not whitespace.
_NEXT_WORD = re.compile(r"\s*\S+")


@dataclass
class Suggestion:
    """The text of one suggestion and how much of it the user accepted.

    `text` keeps the model's own line breaks ("\\r\\n" stays as it arrived), as generation records
    do. Every split falls between a character that is not whitespace and the whitespace after it,
    so a "\\r\\n" pair is never split.
    """

    text: str = ""
    accepted: int = 0  # characters at the start of `text` already inserted into the document
    complete: bool = False  # the run has ended, so no more text will arrive

    @property
    def remaining(self) -> str:
        """The text not yet accepted, which the editor shows after the cursor."""
        return self.text[self.accepted :]

    @property
    def word_count(self) -> int:
        """Number of whitespace-separated words in the remaining text."""
        return len(self.remaining.split())

    def append(self, piece: str) -> None:
        """Add a piece of streamed text."""
        self.text += piece

    def next_word(self) -> str | None:
        """Return the remaining text up to the end of its first word, with the whitespace before it.

        Returns "" when nothing remains, and None while the word may still grow: the run is still
        streaming and the word reaches the end of the text that has arrived. Whitespace alone at
        the end of a finished suggestion is returned whole.
        """
        remaining = self.remaining
        match = _NEXT_WORD.match(remaining)
        if match is None:
            return remaining if self.complete else None
        if match.end() == len(remaining) and not self.complete:
            return None
        return match.group()

    def next_sentence(self, context: str) -> str | None:
        """Return the remaining text up to the end of its first sentence.

        The sentence ends where Stop at "end of sentence" would end a completion (see
        kl3m_desk.stopping): after a sentence's last punctuation, at a paragraph break or before
        the next clause number, without the whitespace after that point. `context` is the document
        text before the suggestion, which those rules read. Returns "" when nothing remains, the
        whole remaining text when the suggestion is complete and no rule ends a sentence in it,
        and None while the run streams and the rules cannot decide yet.
        """
        remaining = self.remaining
        if not remaining:
            return ""
        if self.complete:
            sentence, _reason = cut_completion(remaining, "sentence", context)
            return sentence
        stop_filter = StopFilter("sentence", context)
        sentence = stop_filter.push(remaining)
        return sentence if stop_filter.stop_reason is not None else None

    def take(self, accepted_text: str) -> None:
        """Mark `accepted_text`, the start of the remaining text, as accepted."""
        if not self.remaining.startswith(accepted_text):
            raise ValueError(
                f"{accepted_text!r} is not the start of the remaining suggestion "
                f"{self.remaining[:40]!r}."
            )
        self.accepted += len(accepted_text)


@dataclass
class SuggestionSettings:
    """Saved options of inline suggestions."""

    inline: bool = False  # Generate shows its completion as a suggestion after the cursor
    automatic: bool = False  # a suggestion also starts after a pause in typing
    delay_ms: int = DEFAULT_DELAY_MS  # that pause, MIN_DELAY_MS to MAX_DELAY_MS

    def to_mapping(self) -> dict[str, object]:
        """Return the options as the JSON object of the settings file."""
        return {"inline": self.inline, "automatic": self.automatic, "delay_ms": self.delay_ms}

    @classmethod
    def from_mapping(cls, raw: object, where: str) -> tuple[SuggestionSettings, list[str]]:
        """Read options written by `to_mapping`, with a message for each invalid value.

        An invalid value is replaced by its default, and a delay outside the range is pulled into
        it. `where` names the settings file in the messages.
        """
        settings = cls()
        if not isinstance(raw, dict):
            return settings, [
                f"The suggestion settings in {where} are not a JSON object; the defaults are used."
            ]
        problems = []
        for name in ("inline", "automatic"):
            if name not in raw:
                continue
            if isinstance(raw[name], bool):
                setattr(settings, name, raw[name])
            else:
                problems.append(
                    f"The suggestion setting {name}={raw[name]!r} in {where} is not true or "
                    f"false; {str(getattr(settings, name)).lower()} is used."
                )
        if "delay_ms" in raw:
            delay = raw["delay_ms"]
            if isinstance(delay, int) and not isinstance(delay, bool):
                settings.delay_ms = clamp_delay(delay)
                if settings.delay_ms != delay:
                    problems.append(
                        f"The suggestion delay of {delay} ms in {where} is out of range; "
                        f"{settings.delay_ms} ms is used."
                    )
            else:
                problems.append(
                    f"The suggestion setting delay_ms={delay!r} in {where} is not a whole number "
                    f"of milliseconds; {DEFAULT_DELAY_MS} is used."
                )
        return settings, problems


def clamp_delay(delay_ms: int) -> int:
    """Return `delay_ms` pulled into MIN_DELAY_MS to MAX_DELAY_MS."""
    return max(MIN_DELAY_MS, min(MAX_DELAY_MS, delay_ms))
