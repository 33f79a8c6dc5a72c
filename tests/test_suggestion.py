"""Splitting a suggestion into words and sentences, and reading its saved options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kl3m_desk.settings import Settings
from kl3m_desk.suggestion import (
    DEFAULT_DELAY_MS,
    MAX_DELAY_MS,
    MIN_DELAY_MS,
    Suggestion,
    SuggestionSettings,
)

TEXT = " shall indemnify the Buyer against all claims. The Seller shall pay all costs."


def test_next_word_includes_leading_space() -> None:
    suggestion = Suggestion(TEXT, complete=True)
    assert suggestion.next_word() == " shall"
    suggestion.take(" shall")
    assert suggestion.next_word() == " indemnify"
    assert suggestion.remaining.startswith(" indemnify the Buyer")


def test_next_word_waits_while_streaming() -> None:
    suggestion = Suggestion(" shall indem")
    assert suggestion.next_word() == " shall"
    suggestion.take(" shall")
    assert suggestion.next_word() is None, "the word may go on in the next piece"
    suggestion.append("nify the")
    assert suggestion.next_word() == " indemnify"


def test_next_word_at_end() -> None:
    suggestion = Suggestion(" costs.\r\n", complete=True)
    assert suggestion.next_word() == " costs."
    suggestion.take(" costs.")
    assert suggestion.next_word() == "\r\n", "trailing whitespace is accepted whole"
    suggestion.take("\r\n")
    assert suggestion.next_word() == ""


def test_next_sentence_cuts_after_period() -> None:
    suggestion = Suggestion(TEXT, complete=True)
    context = "7. Indemnification. The Seller"
    first = suggestion.next_sentence(context)
    assert first == " shall indemnify the Buyer against all claims."
    suggestion.take(first)
    assert suggestion.next_sentence(context + first) == " The Seller shall pay all costs."


def test_next_sentence_keeps_abbreviations() -> None:
    suggestion = Suggestion(" under 35 U.S.C. 181 as provided. Then more", complete=True)
    assert suggestion.next_sentence("The Contractor acts") == " under 35 U.S.C. 181 as provided."


def test_next_sentence_waits_while_streaming() -> None:
    suggestion = Suggestion(" shall indemnify the Buyer")
    assert suggestion.next_sentence("The Seller") is None
    suggestion.append(" against all claims. The")
    assert suggestion.next_sentence("The Seller") == (
        " shall indemnify the Buyer against all claims."
    )


def test_next_sentence_without_end_takes_all() -> None:
    suggestion = Suggestion(" shall indemnify the Buyer", complete=True)
    assert suggestion.next_sentence("The Seller") == " shall indemnify the Buyer"


def test_take_rejects_other_text() -> None:
    suggestion = Suggestion(TEXT)
    with pytest.raises(ValueError, match="not the start"):
        suggestion.take(" will")


def test_word_count_of_remaining_text() -> None:
    suggestion = Suggestion(TEXT, complete=True)
    assert suggestion.word_count == 13
    suggestion.take(" shall indemnify")
    assert suggestion.word_count == 11


def test_settings_round_trip() -> None:
    stored = SuggestionSettings(inline=True, automatic=True, delay_ms=2500)
    loaded, problems = SuggestionSettings.from_mapping(stored.to_mapping(), "settings.json")
    assert loaded == stored
    assert problems == []


def test_settings_invalid_values_named() -> None:
    raw = {"inline": "yes", "automatic": 1, "delay_ms": "fast"}
    loaded, problems = SuggestionSettings.from_mapping(raw, "settings.json")
    assert loaded == SuggestionSettings()
    assert len(problems) == 3
    assert "inline='yes'" in problems[0]
    assert "automatic=1" in problems[1]
    assert f"{DEFAULT_DELAY_MS} is used" in problems[2]


@pytest.mark.parametrize(
    ("stored", "expected"),
    [(10, MIN_DELAY_MS), (60_000, MAX_DELAY_MS), (750, 750)],
)
def test_settings_delay_pulled_into_range(stored: int, expected: int) -> None:
    loaded, problems = SuggestionSettings.from_mapping({"delay_ms": stored}, "settings.json")
    assert loaded.delay_ms == expected
    if stored == expected:
        assert problems == []
    else:
        assert problems == [
            f"The suggestion delay of {stored} ms in settings.json is out of range; "
            f"{expected} ms is used."
        ]


def test_settings_file_keeps_suggestions(isolated_profile: Path) -> None:
    settings = Settings.load()
    assert settings.suggestions == SuggestionSettings()
    settings.suggestions = SuggestionSettings(inline=True, automatic=False, delay_ms=400)
    settings.save()
    assert Settings.load().suggestions == settings.suggestions

    data = json.loads(settings.path.read_text(encoding="utf-8"))
    data["suggestions"] = ["not", "an", "object"]
    settings.path.write_text(json.dumps(data), encoding="utf-8")
    reloaded = Settings.load()
    assert reloaded.suggestions == SuggestionSettings()
    assert any("suggestion settings" in warning for warning in reloaded.load_warnings)
