"""Pinned passages in the prompt window, with the tiny model and the kl3m-001-32k tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kl3m_desk.context import (
    PIN_SEPARATOR,
    PinnedPassage,
    build_prompt_with_pins,
    describe_prompt,
    merge_pins,
    nearest_text_reserve,
    pin_overflow_message,
)
from kl3m_desk.generation import build_prompt, stream_completion
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import SamplingParams
from kl3m_desk.review import (
    ReviewFile,
    place_pins,
    read_review_file,
    write_review_file,
)
from tests.conftest import DOCUMENTS_DIR, requires_fixtures, requires_tokenizer

DEFINITIONS = (
    'ARTICLE 1. DEFINITIONS\n\n1.1 "Affiliate" means any entity that controls, is controlled by '
    'or is under common control with a party.\n\n1.2 "Confidential Information" means all '
    "non-public information that one party discloses to the other."
)
CLAUSE = (
    "{n}. Indemnification. The Supplier shall indemnify, defend and hold harmless the Customer "
    "from and against any and all losses arising out of any breach of this Agreement by the "
    "Supplier. "
)


def contract(clauses: int) -> str:
    """Return the definitions followed by `clauses` numbered clauses, far more than one window."""
    body = "".join(CLAUSE.format(n=n) for n in range(2, clauses + 2))
    return f"{DEFINITIONS}\n\nARTICLE 2. OBLIGATIONS\n\n{body}"


def definitions_pin(text: str) -> PinnedPassage:
    return PinnedPassage(0, text[: len(DEFINITIONS)])


def decode(model: LoadedModel, ids: tuple[int, ...] | list[int]) -> str:
    text: str = model.tokenizer.decode(
        list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    return text


def encode(model: LoadedModel, text: str) -> list[int]:
    return list(model.tokenizer(text, add_special_tokens=False)["input_ids"])


def greedy(max_new_tokens: int) -> SamplingParams:
    return SamplingParams.defaults().replace(
        temperature=0.0, repetition_penalty=1.0, max_new_tokens=max_new_tokens, seed=1
    )


@requires_tokenizer
def test_pinned_text_leads_prompt(tiny_model: LoadedModel) -> None:
    text = contract(60)
    pin = definitions_pin(text)
    prompt = build_prompt_with_pins(tiny_model, text, 64, pins=[pin])

    assert prompt.pinned == ((pin.start, pin.end),)
    assert prompt.pinned_text == DEFINITIONS + PIN_SEPARATOR
    assert list(prompt.ids[: prompt.pinned_tokens]) == encode(tiny_model, prompt.pinned_text)
    assert decode(tiny_model, prompt.ids) == prompt.pinned_text + text[prompt.start :]
    assert prompt.start > pin.end
    assert prompt.available - 8 <= prompt.used <= prompt.available
    assert prompt.spans == ((pin.start, pin.end), (prompt.start, len(text)))


@requires_tokenizer
@requires_fixtures
def test_oldest_unpinned_text_dropped(tiny_model: LoadedModel) -> None:
    document = (DOCUMENTS_DIR / "outsourcing_agreement_long.txt").read_text(encoding="utf-8")
    start = document.index("SECTION 1.0 DEFINITIONS\n\n1.1")
    end = document.index("\n\n1.8 ", start) + 2  # definitions 1.1 to 1.7, about 530 tokens
    pin = PinnedPassage(start, document[start:end])
    text = document[: document.index("SECTION 5.0 TERMINATION", end)]

    plain = build_prompt(tiny_model, text, 64)
    prompt = build_prompt_with_pins(tiny_model, text, 64, pins=[pin])

    assert prompt.pin_overflow is None
    assert prompt.pinned == ((start, end),)
    assert decode(tiny_model, prompt.ids) == pin.text + text[prompt.start :]
    # The pinned text took the room of the oldest text that is not pinned: the window's text
    # near the cursor starts later, and everything between the pin and it is left out.
    assert prompt.start > plain.start > end
    assert text[plain.start :].endswith(text[prompt.start :])
    assert prompt.dropped_characters == prompt.start - len(pin.text)
    assert prompt.available - 8 <= prompt.used <= prompt.available


@requires_tokenizer
def test_pin_inside_window_not_repeated(tiny_model: LoadedModel) -> None:
    text = contract(3)  # fits one window whole
    pin = definitions_pin(text)
    prompt = build_prompt_with_pins(tiny_model, text, 64, pins=[pin])
    plain = build_prompt(tiny_model, text, 64)

    assert prompt.start == 0
    assert prompt.pinned == ()
    assert prompt.ids == plain.ids
    assert prompt.spans == ((0, len(text)),)


@requires_tokenizer
def test_large_pin_inside_window_fits(tiny_model: LoadedModel) -> None:
    text = contract(10)  # about 900 tokens, within one window
    plain = build_prompt(tiny_model, text, 64)
    assert plain.start == 0
    # The passage alone needs more than pinned passages may take ahead of the text, but the
    # window reaches it where it is.
    pin = PinnedPassage(0, text[:-10])
    assert len(encode(tiny_model, pin.text)) > 960 - nearest_text_reserve(960)
    prompt = build_prompt_with_pins(tiny_model, text, 64, pins=[pin])

    assert prompt.pin_overflow is None
    assert prompt.ids == plain.ids
    assert prompt.spans == ((0, len(text)),)


@requires_tokenizer
def test_pin_after_cursor_goes_ahead(tiny_model: LoadedModel) -> None:
    document = contract(3) + "\n\nSCHEDULE A. PRICES\n\nThe Fees are USD 10,000 per month."
    schedule = document.index("SCHEDULE A")
    cursor = document.index("3. Indemnification")
    pin = PinnedPassage(schedule, document[schedule:])
    prompt = build_prompt_with_pins(tiny_model, document[:cursor], 64, pins=[pin])

    assert prompt.pinned == ((schedule, len(document)),)
    assert prompt.start == 0
    assert decode(tiny_model, prompt.ids) == pin.text + PIN_SEPARATOR + document[:cursor]
    assert prompt.spans == ((0, cursor), (schedule, len(document)))


@requires_tokenizer
def test_pins_over_budget_left_out(tiny_model: LoadedModel) -> None:
    text = contract(60)
    pin = PinnedPassage(0, text[:6000])  # about 1,300 tokens, more than the whole window
    prompt = build_prompt_with_pins(tiny_model, text, 64, pins=[pin])
    plain = build_prompt(tiny_model, text, 64)

    overflow = prompt.pin_overflow
    assert overflow is not None
    assert overflow.needed_tokens > overflow.budget_tokens
    assert overflow.budget_tokens == 960 - nearest_text_reserve(960)
    assert overflow.left_out == ((0, 6000),)
    assert prompt.ids == plain.ids
    assert prompt.pinned == ()

    message = pin_overflow_message(prompt)
    assert f"need {overflow.needed_tokens:,} tokens" in message
    assert f"only {overflow.budget_tokens:,} fit" in message
    assert "The pinned passage was left out of the prompt" in message
    assert "Unpin or shorten a pinned passage, or lower Max new tokens" in message
    assert "1 pinned passage left out" in describe_prompt(prompt)


@requires_tokenizer
def test_first_pins_left_out_first(tiny_model: LoadedModel) -> None:
    text = contract(80)
    large = PinnedPassage(len(DEFINITIONS), text[len(DEFINITIONS) : 4500])
    small = definitions_pin(text)
    late = PinnedPassage(5000, text[5000:5300])
    prompt = build_prompt_with_pins(tiny_model, text, 64, pins=[late, large, small])

    # The definitions and the large passage touch, so they are joined into one passage.
    overflow = prompt.pin_overflow
    assert overflow is not None
    assert overflow.pinned_count == 2
    assert overflow.left_out == ((0, 4500),)
    assert prompt.pinned == ((5000, 5300),)
    assert "The first 1 of 2 pinned passages was left out" in pin_overflow_message(prompt)


@requires_tokenizer
def test_cache_reused_with_pins(tiny_model: LoadedModel) -> None:
    text = contract(60)
    pins = [definitions_pin(text)]
    cache = tiny_model.engine.new_cache()
    params = greedy(24)

    first = build_prompt_with_pins(tiny_model, text, 24, pins=pins)
    result = stream_completion(tiny_model, first, params, lambda _piece: None, cache=cache)
    assert result.reused_tokens == 0

    # The completion was accepted and the user typed on after it.
    typed = text + result.text + " The Customer shall"
    history = [*first.ids, *result.token_ids]
    second = build_prompt_with_pins(tiny_model, typed, 24, first.start, history, pins)
    assert second.start == first.start
    assert second.pinned == first.pinned
    assert second.ids[: len(history)] == tuple(history)
    again = stream_completion(tiny_model, second, params, lambda _piece: None, cache=cache)
    assert again.reused_tokens == len(history) - 1  # the last generated token was not fed back

    # Without the history the text is tokenized afresh, and the pinned tokens still match.
    fresh = build_prompt_with_pins(tiny_model, typed, 24, first.start, (), pins)
    assert fresh.ids[: first.pinned_tokens] == first.ids[: first.pinned_tokens]
    assert cache.common_prefix(fresh.ids) >= first.used - 2


@requires_tokenizer
def test_anchor_inside_pin_moves_window(tiny_model: LoadedModel) -> None:
    text = contract(60)
    first = build_prompt_with_pins(tiny_model, text, 64)
    # A passage pinned across the window's start: the window cannot start inside it.
    pin = PinnedPassage(first.start - 50, text[first.start - 50 : first.start + 50])
    prompt = build_prompt_with_pins(tiny_model, text, 64, first.start, (), [pin])

    assert prompt.start != first.start
    assert not pin.start < prompt.start < pin.end
    assert prompt.used <= prompt.available


def test_overlapping_pins_merged() -> None:
    text = "0123456789abcdefghij"
    pins = [
        PinnedPassage(6, text[6:12]),
        PinnedPassage(2, text[2:8]),
        PinnedPassage(12, text[12:14]),
        PinnedPassage(16, ""),
    ]
    assert merge_pins(pins, cursor=20) == [PinnedPassage(2, text[2:14])]
    # A passage across the cursor is split there.
    assert merge_pins(pins, cursor=10) == [
        PinnedPassage(2, text[2:10]),
        PinnedPassage(10, text[10:14]),
    ]
    with pytest.raises(ValueError, match="before the document"):
        merge_pins([PinnedPassage(-1, "x")], cursor=5)


@requires_tokenizer
def test_status_line_counts_tokens(tiny_model: LoadedModel) -> None:
    text = contract(60)
    prompt = build_prompt_with_pins(tiny_model, text, 64, pins=[definitions_pin(text)])
    free = prompt.available - prompt.used
    line = describe_prompt(prompt)
    assert line.startswith(f"Context: {prompt.used:,} of 960 prompt tokens used, {free:,} free; ")
    assert f"1 pinned passage, {prompt.pinned_tokens:,} tokens" in line
    assert f"earliest {prompt.dropped_characters:,} characters dropped" in line


def test_records_file_keeps_pins(tmp_path: Path) -> None:
    text = "Definitions here.\n\nThe Supplier shall deliver. 🙂 Fees are due."
    fees = text.index("Fees")
    pins = [PinnedPassage(0, "Definitions here."), PinnedPassage(fees, "Fees are due.")]
    path = tmp_path / "contract.txt.kl3m.json"
    review_file = ReviewFile.for_text(text, [], [])
    review_file.pins = pins
    write_review_file(path, review_file, "contract.txt")

    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["pinned"][1] == {"start": fees, "end": fees + 13, "text": "Fees are due."}
    loaded = read_review_file(path)
    assert loaded.pins == pins

    # Text inserted before a pinned passage elsewhere: it is found again by its text.
    edited = "Recitals.\n\n" + text
    placed, missing = place_pins(loaded.pins, edited)
    assert placed == [
        PinnedPassage(11, "Definitions here."),
        PinnedPassage(fees + 11, "Fees are due."),
    ]
    assert missing == 0
    placed, missing = place_pins(loaded.pins, "Nothing of it is left.")
    assert placed == []
    assert missing == 2


def test_records_file_without_pins_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.txt.kl3m.json"
    data = ReviewFile.for_text("Some text.", [], []).to_json("old.txt")
    del data["pinned"]  # as written before pinned passages existed
    path.write_text(json.dumps(data), encoding="utf-8")
    assert read_review_file(path).pins == []
