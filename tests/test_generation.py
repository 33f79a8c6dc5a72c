"""Generation engine: prompt window, incremental decoding, sampling and cancellation."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from kl3m_desk.generation import (
    StreamDecoder,
    _logits_processors,
    build_prompt,
    stream_completion,
)
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import SamplingParams
from tests.conftest import (
    DOCUMENTS_DIR,
    TRICKY_TEXT,
    hook_engine,
    legal_fixture_paths,
    requires_fixtures,
    requires_tokenizer,
)

SPECIAL_TEXTS = ("<|start|>", "<|end|>", "<|pad|>", "<|unk|>", "<|sep|>", "<|cls|>", "<|mask|>")


def params(**changes: object) -> SamplingParams:
    return SamplingParams.defaults().replace(**changes)


def decode(model: LoadedModel, ids: list[int]) -> str:
    text: str = model.tokenizer.decode(
        ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    return text


def run(
    model: LoadedModel, text: str, sampling: SamplingParams, cancel: threading.Event | None = None
) -> tuple[list[str], object]:
    pieces: list[str] = []
    prompt = build_prompt(model, text, sampling.max_new_tokens)
    result = stream_completion(model, prompt, sampling, pieces.append, cancel)
    return pieces, result


@requires_tokenizer
@requires_fixtures
@pytest.mark.parametrize("path", legal_fixture_paths(), ids=lambda path: path.stem[:24])
def test_stream_equals_decode_legal_prompts(tiny_model: LoadedModel, path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    pieces, result = run(tiny_model, text, params(max_new_tokens=96, seed=7))
    assert result.token_ids, "the model generated no token"
    assert "".join(pieces) == decode(tiny_model, result.token_ids)
    assert result.text == "".join(pieces)


@requires_tokenizer
@requires_fixtures
def test_stream_equals_decode_tricky_file(tiny_model: LoadedModel) -> None:
    text = (DOCUMENTS_DIR / "tricky.txt").read_text(encoding="utf-8")
    for seed in range(3):
        pieces, result = run(tiny_model, text, params(max_new_tokens=96, seed=seed))
        assert "".join(pieces) == decode(tiny_model, result.token_ids)


@requires_tokenizer
def test_stream_equals_decode_rare_characters(tiny_model: LoadedModel) -> None:
    for seed in range(3):
        pieces, result = run(tiny_model, TRICKY_TEXT, params(max_new_tokens=128, seed=seed))
        assert "".join(pieces) == decode(tiny_model, result.token_ids)


@requires_tokenizer
def test_decoder_holds_back_partial_characters(tiny_model: LoadedModel) -> None:
    tricky_file = DOCUMENTS_DIR / "tricky.txt"
    texts = [TRICKY_TEXT, "Ω 東京 🙂🙂 €"]
    if tricky_file.is_file():
        texts.append(tricky_file.read_text(encoding="utf-8"))
    for text in texts:
        ids = tiny_model.tokenizer(text, add_special_tokens=False)["input_ids"]
        decoder = StreamDecoder(tiny_model.tokenizer)
        pieces = [decoder.push(token_id) for token_id in ids]
        pieces.append(decoder.flush())
        assert "".join(pieces) == text
        assert not any("\ufffd" in piece for piece in pieces)
    multi_byte = [i for i in tiny_model.tokenizer("🙂", add_special_tokens=False)["input_ids"]]
    assert len(multi_byte) > 1, "the emoji should span several byte tokens"


def test_decoder_flush_matches_decode_of_random_ids(tiny_model: LoadedModel) -> None:
    generator = torch.Generator().manual_seed(3)
    vocabulary = int(tiny_model.model.config.vocab_size)
    for _ in range(20):
        ids = torch.randint(3, vocabulary, (40,), generator=generator).tolist()
        decoder = StreamDecoder(tiny_model.tokenizer)
        joined = "".join(decoder.push(token_id) for token_id in ids) + decoder.flush()
        assert joined == decode(tiny_model, ids)


@pytest.fixture
def special_token_bias(tiny_model: LoadedModel):
    """Make special tokens other than EOS the most likely output, to prove they are suppressed."""
    suppressed = list(tiny_model.suppressed_token_ids)

    def favour_special(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[..., suppressed] += 1000.0
        return logits

    remove = hook_engine(tiny_model, after=favour_special)
    yield suppressed
    remove()


@requires_tokenizer
def test_no_special_token_text(tiny_model: LoadedModel, special_token_bias: list[int]) -> None:
    assert special_token_bias, "the tokenizer declares special tokens besides EOS"
    for temperature in (0.0, 1.0):
        pieces, result = run(
            tiny_model,
            "The parties agree",
            params(temperature=temperature, max_new_tokens=48, seed=1),
        )
        text = "".join(pieces)
        assert not set(result.token_ids) & set(special_token_bias)
        for special in SPECIAL_TEXTS:
            assert special not in text


def test_greedy_is_repeatable(tiny_model: LoadedModel) -> None:
    sampling = params(temperature=0.0, max_new_tokens=64)
    first, _ = run(tiny_model, "Indemnification. The Supplier shall", sampling)
    second, _ = run(tiny_model, "Indemnification. The Supplier shall", sampling)
    assert "".join(first) == "".join(second)
    assert "".join(first)


def test_seed_makes_sampling_repeatable(tiny_model: LoadedModel) -> None:
    sampling = params(temperature=1.0, max_new_tokens=48, seed=1234)
    _, first = run(tiny_model, "Notices. All notices", sampling)
    _, second = run(tiny_model, "Notices. All notices", sampling)
    _, other = run(tiny_model, "Notices. All notices", sampling.replace(seed=99))
    assert first.token_ids == second.token_ids
    assert first.token_ids != other.token_ids


def test_greedy_matches_transformers_generate(tiny_model: LoadedModel) -> None:
    # 600 prompt tokens plus 300 new ones run past the 256-token sliding window.
    sampling = params(temperature=0.0, max_new_tokens=300, repetition_penalty=1.0)
    prompt_ids = torch.randint(10, 30000, (1, 600), generator=torch.Generator().manual_seed(5))
    text = decode(tiny_model, prompt_ids[0].tolist())
    prompt = build_prompt(tiny_model, text, sampling.max_new_tokens)
    result = stream_completion(tiny_model, prompt, sampling, lambda _piece: None)
    reference = tiny_model.model.generate(
        torch.tensor([prompt.ids]),
        attention_mask=torch.ones(1, len(prompt.ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=300,
        pad_token_id=2,
        suppress_tokens=list(tiny_model.suppressed_token_ids),
    )
    expected = reference[0, len(prompt.ids) :].tolist()
    if tiny_model.eos_token_ids & set(expected):
        expected = expected[
            : min(expected.index(i) for i in tiny_model.eos_token_ids if i in expected)
        ]
    assert result.token_ids == expected


def test_top_k_zero_adds_no_top_k(tiny_model: LoadedModel) -> None:
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    processors = _logits_processors(tiny_model, params(temperature=1.0, top_k=0, top_p=0.05))
    assert not any(isinstance(p, TopKLogitsWarper) for p in processors)
    top_p = [p for p in processors if isinstance(p, TopPLogitsWarper)]
    assert len(top_p) == 1
    assert top_p[0].top_p == pytest.approx(0.05)


def test_top_k_one_equals_greedy(tiny_model: LoadedModel) -> None:
    greedy = params(temperature=0.0, max_new_tokens=40, repetition_penalty=1.0)
    _, expected = run(tiny_model, "Termination. Either party", greedy)
    _, top_k = run(
        tiny_model, "Termination. Either party", greedy.replace(temperature=1.5, top_k=1, seed=5)
    )
    assert top_k.token_ids == expected.token_ids


def test_cancel_stops_within_one_token(tiny_model: LoadedModel) -> None:
    cancel = threading.Event()
    received: list[str] = []

    def on_text(piece: str) -> None:
        received.append(piece)
        if len(received) == 3:
            cancel.set()

    prompt = build_prompt(tiny_model, "Force Majeure. Neither party", 200)
    result = stream_completion(
        tiny_model, prompt, params(max_new_tokens=200, seed=2), on_text, cancel
    )
    assert result.stop_reason == "stopped"
    assert len(received) == 3
    assert len(result.token_ids) <= 4
    assert "".join(received) == decode(tiny_model, result.token_ids)


def test_empty_text_starts_from_bos(tiny_model: LoadedModel) -> None:
    prompt = build_prompt(tiny_model, "", 64)
    assert prompt.ids == (tiny_model.bos_token_id,)
    pieces, result = run(tiny_model, "", params(max_new_tokens=16, seed=3))
    assert "".join(pieces) == decode(tiny_model, result.token_ids)


@requires_tokenizer
@requires_fixtures
def test_long_prompt_trimmed_from_start(tiny_model: LoadedModel) -> None:
    text = (DOCUMENTS_DIR / "outsourcing_agreement_long.txt").read_text(encoding="utf-8")
    text = text[:6000]
    full_ids = tiny_model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(full_ids) >= 1500, "the test needs a prompt of at least 1,500 tokens"

    prompt = build_prompt(tiny_model, text, 512)
    assert prompt.available == 512
    assert 500 <= prompt.used <= 512
    assert prompt.dropped_characters > 0
    assert text.endswith(decode(tiny_model, list(prompt.ids)))
    assert text[prompt.start :] == decode(tiny_model, list(prompt.ids))

    cache = tiny_model.engine.new_cache()
    result = stream_completion(
        tiny_model, prompt, params(max_new_tokens=512, seed=4), lambda _piece: None, cache=cache
    )
    assert prompt.used + len(result.token_ids) <= 1024
    assert cache.length <= 1024
    assert cache.tokens[: prompt.used] == list(prompt.ids)


def test_max_new_tokens_capped_by_window(tiny_model: LoadedModel) -> None:
    prompt = build_prompt(tiny_model, "The Seller", 5000)
    assert prompt.available == 1
    assert prompt.used == 1


def test_model_error_propagates(tiny_model: LoadedModel) -> None:
    calls = 0

    def fail_on_fourth_call() -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("injected failure")

    prompt = build_prompt(tiny_model, "Severability.", 50)
    remove = hook_engine(tiny_model, before=fail_on_fourth_call)
    received: list[str] = []
    try:
        with pytest.raises(RuntimeError, match="injected failure"):
            stream_completion(
                tiny_model, prompt, params(max_new_tokens=50, seed=1), received.append
            )
    finally:
        remove()
    assert len(received) <= 3
