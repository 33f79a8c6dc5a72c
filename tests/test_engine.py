"""The engine: Fast against float32, key/value cache reuse, and Exact against transformers.

All of it runs the tiny random model through the app's own loading code. Its weights are random,
which exaggerates rounding errors, so Fast is compared with the model cast to bfloat16 (the
precision inference commonly accepts) rather than with a fixed number.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kl3m_desk.device import load_and_place
from kl3m_desk.engine import KVCache, PrefillCancelled
from kl3m_desk.generation import Prompt, build_prompt, stream_completion
from kl3m_desk.model import LoadedModel, load_model
from kl3m_desk.params import SamplingParams
from tests.conftest import hook_engine, legal_fixture_paths, requires_fixtures

GUARD_PROMPT_TOKENS = 600  # past the 256-token window, as in a long document
CLAUSE = (
    "{n}. Indemnification. The Supplier shall indemnify, defend and hold harmless the Customer "
    "from and against any and all losses arising out of any breach of this Agreement by the "
    "Supplier. "
)


def contract(clauses: int) -> str:
    return "".join(CLAUSE.format(n=n) for n in range(1, clauses + 1))


def greedy(max_new_tokens: int) -> SamplingParams:
    return SamplingParams.defaults().replace(
        temperature=0.0, repetition_penalty=1.0, max_new_tokens=max_new_tokens, seed=1
    )


@pytest.fixture(scope="module")
def fast_model(tiny_model_dir: Path) -> LoadedModel:
    """The tiny model as Fast runs it on a CPU with bfloat16 instructions."""
    return load_model(tiny_model_dir, dtype=torch.bfloat16, weights="fast")


@pytest.fixture
def computed_tokens(request: pytest.FixtureRequest) -> Iterator[list[int]]:
    """Count the tokens each forward pass of the model named by the test's parameter computes."""
    loaded: LoadedModel = request.getfixturevalue(request.param)
    counts: list[int] = []
    original = loaded.engine.forward

    def forward(cache: KVCache, ids: list[int]) -> torch.Tensor:
        counts.append(len(ids))
        return original(cache, ids)

    loaded.engine.forward = forward  # type: ignore[method-assign]
    yield counts
    del loaded.engine.forward


def teacher_forced_prompts(loaded: LoadedModel) -> list[list[int]]:
    """Five 600-token prompts, each starting with a different legal fixture and running on."""
    texts = [path.read_text(encoding="utf-8") for path in legal_fixture_paths()]
    prompts = []
    for first in range(5):
        ids: list[int] = []
        index = first
        while len(ids) < GUARD_PROMPT_TOKENS:
            text = texts[index % len(texts)] + "\n\n"
            ids += loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
            index += 1
        prompts.append(ids[:GUARD_PROMPT_TOKENS])
    return prompts


def agreement(logits: list[torch.Tensor], reference: list[torch.Tensor]) -> tuple[float, float]:
    """Smallest per-position cosine similarity and share of equal top-1 tokens, over all prompts."""
    pairs = list(zip(logits, reference, strict=True))
    cosines = [F.cosine_similarity(a, b, dim=-1).min() for a, b in pairs]
    same = [(a.argmax(-1) == b.argmax(-1)).float().mean() for a, b in pairs]
    return float(min(cosines)), float(sum(same) / len(same))


# Quality guard


@requires_fixtures
def test_fast_passes_quality_guard(
    tiny_model: LoadedModel, fast_model: LoadedModel, tiny_model_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM

    prompts = teacher_forced_prompts(tiny_model)
    assert len(prompts) == 5
    assert all(len(ids) == GUARD_PROMPT_TOKENS for ids in prompts)
    reference = [tiny_model.engine.logits_for(ids) for ids in prompts]

    cast = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    with torch.inference_mode():
        cast_logits = [cast(input_ids=torch.tensor([ids])).logits[0].float() for ids in prompts]
    fast_logits = [fast_model.engine.logits_for(ids) for ids in prompts]

    cast_cosine, cast_top1 = agreement(cast_logits, reference)
    fast_cosine, fast_top1 = agreement(fast_logits, reference)
    assert cast_top1 < 1.0, "bfloat16 should differ from float32 somewhere on random weights"
    assert fast_cosine >= cast_cosine
    assert fast_top1 >= cast_top1

    # Generated tokens go through the one-token decode path: it must pass the guard too, on
    # the prompts' second half, one token at a time after a prefill of the first half.
    half = GUARD_PROMPT_TOKENS // 2
    decoded = []
    for ids in prompts:
        cache = fast_model.engine.new_cache()
        rows = [fast_model.engine.prefill(cache, ids[: half + 1])]
        rows += [fast_model.engine.step(cache, token) for token in ids[half + 1 :]]
        decoded.append(torch.stack(rows))
    decode_cosine, decode_top1 = agreement(decoded, [logits[half:] for logits in reference])
    cast_cosine, cast_top1 = agreement(
        [logits[half:] for logits in cast_logits], [logits[half:] for logits in reference]
    )
    assert decode_cosine >= cast_cosine
    assert decode_top1 >= cast_top1


# Exact against transformers


def test_exact_matches_transformers_greedy(tiny_model_dir: Path) -> None:
    exact = load_and_place(tiny_model_dir, "cpu", "exact")
    assert exact.precision == "Exact"
    assert exact.dtype == torch.float32
    # 600 prompt tokens and 300 new ones run well past the 256-token sliding window.
    prompt_ids = torch.randint(10, 30000, (600,), generator=torch.Generator().manual_seed(11))
    prompt_ids = prompt_ids % exact.model.config.vocab_size
    prompt = Prompt(tuple(prompt_ids.tolist()), available=724, text_length=0, start=0)
    result = stream_completion(exact, prompt, greedy(300), lambda _piece: None)

    reference = exact.model.generate(
        prompt_ids[None, :],
        attention_mask=torch.ones(1, 600, dtype=torch.long),
        do_sample=False,
        max_new_tokens=300,
        pad_token_id=2,
        suppress_tokens=list(exact.suppressed_token_ids),
    )[0, 600:].tolist()
    ends = [reference.index(token) for token in exact.eos_token_ids if token in reference]
    expected = reference[: min(ends)] if ends else reference
    assert len(expected) >= 50, "the reference should generate enough tokens to compare"
    assert result.token_ids == expected


def test_positions_past_limit_match_transformers(
    tiny_model: LoadedModel,
) -> None:
    # The engine lets a window grow to twice the model's 1,024 positions. With a 256-token
    # sliding window and rotary embeddings, transformers computes those positions too, and the
    # two must agree there as they do below 1,024.
    assert tiny_model.engine.capacity == 2048
    ids = torch.randint(10, 500, (1500,), generator=torch.Generator().manual_seed(2)).tolist()
    with torch.inference_mode():
        expected = tiny_model.model(input_ids=torch.tensor([ids])).logits[0]
    actual = tiny_model.engine.logits_for(ids)
    assert torch.allclose(actual, expected, atol=1e-4, rtol=0)


# Cache reuse


@pytest.mark.parametrize("computed_tokens", ["fast_model"], indirect=True)
def test_edit_recomputes_from_edit_only(
    fast_model: LoadedModel, computed_tokens: list[int]
) -> None:
    engine = fast_model.engine
    ids = fast_model.tokenizer(contract(40), add_special_tokens=False)["input_ids"][:700]
    cache = engine.new_cache()
    engine.prefill(cache, ids)
    assert sum(computed_tokens) == 700

    edit_at = 300
    edited = [*ids[:edit_at], ids[edit_at] + 1, *ids[edit_at + 1 :]]
    computed_tokens.clear()
    logits = engine.prefill(cache, edited)
    assert sum(computed_tokens) == 700 - edit_at
    assert cache.tokens == edited

    fresh = engine.new_cache()
    expected = engine.prefill(fresh, edited)
    assert int(logits.argmax()) == int(expected.argmax())
    assert torch.allclose(logits, expected, atol=0.05, rtol=0)
    assert torch.equal(cache.keys[:, :, :700], fresh.keys[:, :, :700]) or torch.allclose(
        cache.keys[:, :, :700].float(), fresh.keys[:, :, :700].float(), atol=0.05
    )


@pytest.mark.parametrize("computed_tokens", ["fast_model"], indirect=True)
def test_unchanged_prompt_recomputes_last_token(
    fast_model: LoadedModel, computed_tokens: list[int]
) -> None:
    engine = fast_model.engine
    ids = fast_model.tokenizer(contract(5), add_special_tokens=False)["input_ids"]
    cache = engine.new_cache()
    first = engine.prefill(cache, ids)
    computed_tokens.clear()
    again = engine.prefill(cache, ids)
    assert computed_tokens == [1]
    # The last token goes through the one-token path both times, so the logits are identical.
    assert torch.equal(first, again)


@pytest.mark.parametrize("model_name", ["tiny_model", "fast_model"])
def test_cache_reuse_matches_scratch_greedy(
    model_name: str, request: pytest.FixtureRequest
) -> None:
    loaded: LoadedModel = request.getfixturevalue(model_name)
    cache = loaded.engine.new_cache()
    params = greedy(40)

    def continue_text(text: str, anchor: int | None) -> tuple[Prompt, list[int], int]:
        prompt = build_prompt(loaded, text, params.max_new_tokens, anchor)
        reused = stream_completion(loaded, prompt, params, lambda _piece: None, cache=cache)
        scratch = stream_completion(loaded, prompt, params, lambda _piece: None)
        assert reused.token_ids == scratch.token_ids
        assert scratch.reused_tokens == 0
        return prompt, reused.token_ids, reused.reused_tokens

    document = contract(12)
    first, tokens, reused = continue_text(document, None)
    assert reused == 0

    # Accepting the completion: the document now ends with it.
    document += loaded.tokenizer.decode(tokens, skip_special_tokens=True)
    accepted, _tokens, reused = continue_text(document, first.start)
    assert accepted.start == first.start
    assert reused >= first.used - 1

    # Editing the last sentence: everything before it is reused.
    cut = document.rindex(". ") + 2
    edited_document = document[:cut] + "Each party shall bear its own costs."
    edited, _tokens, reused = continue_text(edited_document, accepted.start)
    unchanged = loaded.tokenizer(document[:cut], add_special_tokens=False)["input_ids"]
    assert reused >= len(unchanged) - 2
    assert reused < edited.used

    # An edit near the start invalidates everything after it, and nothing before it.
    early_edit = edited_document.replace("indemnify", "reimburse", 1)
    prompt, _tokens, reused = continue_text(early_edit, edited.start)
    expected = 0
    for old, new in zip(edited.ids, prompt.ids, strict=False):
        if old != new:
            break
        expected += 1
    assert 0 < reused <= expected


@pytest.mark.parametrize("computed_tokens", ["fast_model"], indirect=True)
def test_cancelled_prefill_keeps_finished_chunks(
    fast_model: LoadedModel, computed_tokens: list[int]
) -> None:
    engine = fast_model.engine
    ids = fast_model.tokenizer(contract(30), add_special_tokens=False)["input_ids"][:500]
    cancel = threading.Event()
    remove = hook_engine(fast_model, after=lambda logits: (cancel.set(), logits)[1])
    cache = engine.new_cache()
    try:
        with pytest.raises(PrefillCancelled):
            engine.prefill(cache, ids, cancel, chunk=128)
    finally:
        remove()
    assert cache.length == 128
    computed_tokens.clear()
    engine.prefill(cache, ids)
    assert sum(computed_tokens) == 500 - 128


# The prompt window


def test_anchored_window_stays_while_writing(tiny_model: LoadedModel) -> None:
    document = contract(60)  # far more than 1,024 tokens
    first = build_prompt(tiny_model, document, 64)
    assert first.start > 0
    assert first.available - 8 <= first.used <= first.available

    document += "The Customer shall pay all undisputed invoices within thirty days. " * 20
    later = build_prompt(tiny_model, document, 64, first.start)
    assert later.start == first.start
    assert later.used > first.available  # the window grew past a new window's size
    assert later.ids[: first.used - 1] == first.ids[: first.used - 1]

    # Once the text after the anchor outgrows the engine's capacity, a new window is cut.
    document += contract(60)
    moved = build_prompt(tiny_model, document, 64, first.start)
    assert moved.start > first.start
    assert moved.used <= moved.available


def test_window_moves_when_cursor_returns(tiny_model: LoadedModel) -> None:
    document = contract(60)
    window = build_prompt(tiny_model, document, 64)
    # The cursor moved up: little text is left after the old window start.
    shortened = document[: window.start + 200]
    prompt = build_prompt(tiny_model, shortened, 64, window.start)
    assert prompt.start < window.start
    assert prompt.used >= prompt.available - 8

    before_anchor = document[: window.start - 10]
    prompt = build_prompt(tiny_model, before_anchor, 64, window.start)
    assert prompt.start < window.start


def test_prefill_rejects_bad_lengths(tiny_model: LoadedModel) -> None:
    cache = tiny_model.engine.new_cache()
    assert cache.capacity == tiny_model.engine.capacity
    assert cache.keys.dtype == torch.float32
    with pytest.raises(ValueError, match="empty"):
        tiny_model.engine.prefill(cache, [])
    with pytest.raises(ValueError, match="more than"):
        tiny_model.engine.prefill(cache, [5] * (tiny_model.engine.capacity + 1))


def test_accepted_completion_keeps_model_tokens(fast_model: LoadedModel) -> None:
    document = contract(8)
    cache = fast_model.engine.new_cache()
    params = greedy(30)
    prompt = build_prompt(fast_model, document, 30)
    result = stream_completion(fast_model, prompt, params, lambda _piece: None, cache=cache)
    history = [*prompt.ids, *result.token_ids]

    # The document now ends with the completion, and the user typed on.
    typed = document + result.text + " The Customer"
    accepted = build_prompt(fast_model, typed, 30, prompt.start, history)
    assert list(accepted.ids[: len(history)]) == history
    assert fast_model.tokenizer.decode(list(accepted.ids)) == typed[prompt.start :]
    again = stream_completion(fast_model, accepted, params, lambda _piece: None, cache=cache)
    assert again.reused_tokens == len(history) - 1  # the last generated token was not fed back

    # Once the text no longer starts with what the history spells, it is tokenized afresh.
    edited = typed.replace("Supplier", "Vendor", 1)
    fresh = build_prompt(fast_model, edited, 30, prompt.start, history)
    expected = fast_model.tokenizer(edited[prompt.start :], add_special_tokens=False)["input_ids"]
    assert list(fresh.ids) == expected
