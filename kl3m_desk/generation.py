"""Streaming text generation: prompt window, sampling loop and incremental decoding.

Nothing here touches Qt. `stream_completion` runs the decode loop on the calling thread and hands
each new piece of text to a callback. The GUI calls it on its inference thread, the command line
on the main thread.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from kl3m_desk.engine import KVCache, PrefillCancelled
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import SamplingParams
from kl3m_desk.stopping import StopFilter

log = logging.getLogger(__name__)

# A prompt window of N tokens never spans more than N * MAX_CHARS_PER_TOKEN characters of legal
# text (the kl3m-001-32k tokenizer averages 2.1-2.7 characters per token), so only that tail of a
# long document is tokenized. A text with longer tokens keeps fewer tokens, never more positions.
MAX_CHARS_PER_TOKEN = 16

# "sentence", "paragraph" and "clause": the stop option (SamplingParams.stop_at) ended the text.
StopReason = Literal["eos", "length", "stopped", "sentence", "paragraph", "clause"]

# Prompt tokens decoded for the stop rules, which read the end of the text before the cursor.
STOP_CONTEXT_TOKENS = 256


@dataclass(frozen=True)
class PinOverflow:
    """Pinned passages left out of a prompt because they need more tokens than it leaves them."""

    needed_tokens: int  # tokens that every pinned passage would take, with the separators
    budget_tokens: int  # tokens the window leaves pinned passages
    pinned_count: int  # pinned passages, after joining overlapping ones
    left_out: tuple[tuple[int, int], ...]  # document ranges of the passages left out


@dataclass(frozen=True)
class Prompt:
    """The token window given to the model, cut from the text before the cursor.

    With pinned passages (see kl3m_desk.context.build_prompt_with_pins), the first
    `pinned_tokens` ids encode `pinned_text`, and the text before the cursor follows from `start`.
    """

    ids: tuple[int, ...]
    available: int  # positions a new window may fill: the model's positions minus max new tokens
    text_length: int  # characters of text before the cursor
    start: int  # character offset in that text where the window starts; > 0 when text was dropped
    pinned: tuple[tuple[int, int], ...] = ()  # document ranges of the pinned text ahead of it
    pinned_text: str = ""  # that text, with the separators between passages
    pinned_tokens: int = 0
    pin_overflow: PinOverflow | None = None  # set when pinned passages were left out

    @property
    def used(self) -> int:
        """Number of prompt tokens given to the model."""
        return len(self.ids)

    @property
    def dropped_characters(self) -> int:
        """Characters before `start` that are neither in the window nor pinned ahead of it."""
        pinned_before = sum(max(0, min(end, self.start) - begin) for begin, end in self.pinned)
        return self.start - pinned_before

    @property
    def spans(self) -> tuple[tuple[int, int], ...]:
        """Document ranges of all the text the prompt contains, in document order."""
        ranges = list(self.pinned)
        if self.start < self.text_length:
            ranges.append((self.start, self.text_length))
        return tuple(sorted(ranges))


def build_prompt(
    loaded: LoadedModel,
    text: str,
    max_new_tokens: int,
    anchor: int | None = None,
    history: Sequence[int] = (),
) -> Prompt:
    """Tokenize `text` into a window that leaves room for `max_new_tokens` new tokens.

    A new window holds the tokens nearest the end of `text` (the cursor), up to the model's
    positions minus `max_new_tokens`, and starts at a token boundary (`Prompt.start`). Passing
    that start back as `anchor` keeps the window where it was while the user writes on, so the
    key/value cache of its tokens stays valid: the anchored window may grow to the engine's
    capacity (twice the model's positions for a sliding-window model, see
    kl3m_desk.engine.capacity_for), and a new window is cut only when the text after `anchor`
    outgrows that or shrinks to under half a window. Empty text starts from the BOS token.

    `history` is the token sequence of the previous request from `anchor` on: its prompt and the
    completion the model generated. Where the text after `anchor` still starts with exactly the
    text those tokens spell, the anchored window keeps them rather than tokenizing that text
    again, so an accepted completion is read back as the tokens the model wrote and its keys and
    values in the cache stay valid.
    """
    max_new_tokens = clamp_max_new_tokens(loaded, max_new_tokens)
    available = loaded.max_positions - max_new_tokens
    if not text:
        return Prompt(ids=(_start_token(loaded),), available=available, text_length=0, start=0)

    capacity = loaded.engine.capacity - max_new_tokens
    if anchor is not None and 0 <= anchor < len(text) <= anchor + capacity * MAX_CHARS_PER_TOKEN:
        anchored = _tokens_after(loaded, text, anchor, history)
        fits = 0 < len(anchored) <= capacity
        if fits and (anchor == 0 or len(anchored) >= available // 2):
            return Prompt(tuple(anchored), available, len(text), anchor)

    tail_start = max(0, len(text) - available * MAX_CHARS_PER_TOKEN)
    encoding = loaded.tokenizer(
        text[tail_start:], add_special_tokens=False, return_offsets_mapping=True
    )
    ids: list[int] = list(encoding["input_ids"])
    offsets: list[tuple[int, int]] = list(encoding["offset_mapping"])
    first = max(0, len(ids) - available)
    # Byte-level tokens of one character share its offsets: never start inside a character.
    while 0 < first < len(ids) and offsets[first][0] == offsets[first - 1][0]:
        first += 1
    if not ids[first:]:
        start_id = _start_token(loaded)
        return Prompt(ids=(start_id,), available=available, text_length=len(text), start=len(text))
    start = tail_start + (offsets[first][0] if first > 0 else 0)
    return Prompt(ids=tuple(ids[first:]), available=available, text_length=len(text), start=start)


def _tokens_after(loaded: LoadedModel, text: str, start: int, history: Sequence[int]) -> list[int]:
    # Random-weight and real models alike can write text that tokenizes differently when read
    # again (" Cust" + "omer" versus " Customer"), so the history is kept where it still fits.
    if history:
        spelled: str = loaded.tokenizer.decode(
            list(history), skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        if text.startswith(spelled, start):
            rest = text[start + len(spelled) :]
            tail = loaded.tokenizer(rest, add_special_tokens=False)["input_ids"] if rest else []
            return [*history, *tail]
    return list(loaded.tokenizer(text[start:], add_special_tokens=False)["input_ids"])


def _start_token(loaded: LoadedModel) -> int:
    return loaded.bos_token_id if loaded.bos_token_id is not None else min(loaded.eos_token_ids)


def clamp_max_new_tokens(loaded: LoadedModel, max_new_tokens: int) -> int:
    """Return `max_new_tokens` limited so that at least one prompt token fits the window."""
    return max(1, min(max_new_tokens, loaded.max_positions - 1))


class StreamDecoder:
    """Incremental detokenizer whose pieces join to exactly `tokenizer.decode(all ids)`.

    kl3m-001-32k spells rare characters (Ω, 東, emoji) as several byte tokens, and decoding a
    partial character yields U+FFFD. The decoder therefore decodes a short window of recent tokens
    and holds text back while that window ends in U+FFFD; `flush` releases whatever is left.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_start = 0  # first id of the window decoded for context
        self._emitted_end = 0  # ids before this index are already in the emitted text

    @property
    def ids(self) -> list[int]:
        """Return the token ids received so far."""
        return list(self._ids)

    def _decode(self, ids: list[int]) -> str:
        text: str = self._tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return text

    def push(self, token_id: int) -> str:
        """Add one token and return the text that is now complete ("" while bytes are pending)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_start : self._emitted_end])
        window = self._decode(self._ids[self._prefix_start :])
        if len(window) <= len(prefix) or window.endswith("\ufffd"):
            return ""
        self._prefix_start = self._emitted_end
        self._emitted_end = len(self._ids)
        return window[len(prefix) :]

    def discard_pending(self) -> None:
        """Forget the tokens whose text is still held back."""
        del self._ids[self._emitted_end :]

    def flush(self) -> str:
        """Return the text still held back, decoded as the tokenizer decodes it."""
        prefix = self._decode(self._ids[self._prefix_start : self._emitted_end])
        window = self._decode(self._ids[self._prefix_start :])
        self._prefix_start = self._emitted_end = len(self._ids)
        return window[len(prefix) :]


@dataclass
class GenerationResult:
    """Outcome of one completion."""

    text: str
    token_ids: list[int]  # every token generated, also those after a stop option's cut
    stop_reason: StopReason
    seed: int
    prompt: Prompt
    prefill_seconds: float = 0.0  # prompt processing up to the first token
    decode_seconds: float = 0.0  # from the first token to the last
    reused_tokens: int = 0  # prompt tokens whose keys and values came from the cache
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        """Decode speed after the first token, or 0.0 when fewer than two tokens were generated."""
        if len(self.token_ids) < 2 or self.decode_seconds <= 0:
            return 0.0
        return (len(self.token_ids) - 1) / self.decode_seconds


def _logits_processors(loaded: LoadedModel, params: SamplingParams) -> Any:
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        SuppressTokensLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=params.repetition_penalty))
    if loaded.suppressed_token_ids:
        processors.append(
            SuppressTokensLogitsProcessor(list(loaded.suppressed_token_ids), device="cpu")
        )
    if not params.greedy:
        processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            processors.append(TopKLogitsWarper(top_k=params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=params.top_p))
    return processors


def _stop_context(loaded: LoadedModel, prompt: Prompt, params: SamplingParams) -> str:
    """Return the end of the prompt's text for the stop rules, or "" without a stop option."""
    if params.stop_at == "none":
        return ""
    text: str = loaded.tokenizer.decode(
        list(prompt.ids[-STOP_CONTEXT_TOKENS:]),
        skip_special_tokens=True,
        clean_up_tokenization_spaces=False,
    )
    return text


def stream_completion(
    loaded: LoadedModel,
    prompt: Prompt,
    params: SamplingParams,
    on_text: Callable[[str], None],
    cancel: threading.Event | None = None,
    cache: KVCache | None = None,
    prompt_logits: torch.Tensor | None = None,
) -> GenerationResult:
    """Generate a completion of `prompt`, calling `on_text` with each newly completed piece.

    Runs entirely on the calling thread. `cache` (from `loaded.engine.new_cache()`) carries the
    keys and values of the previous prompt and completion into this one: the prompt's tokens that
    match it are not computed again, and afterwards it contains this prompt and the completion
    up to its last token, which is never fed back. Without
    it the prompt is computed from scratch. Setting `cancel` stops the loop before the next token
    is chosen, so at most the token being computed is lost and nothing is passed to `on_text`
    after it. The pieces passed to `on_text` join to `result.text`, which is
    `tokenizer.decode(result.token_ids)` with special tokens skipped, or its start up to where
    `params.stop_at` ended the completion. `prompt_logits` are the logits after the prompt's
    last token, from `Engine.prefill`; when `cache` then contains exactly the prompt, the prompt
    is not computed at all (see `stream_alternatives`). Exceptions from the model propagate to
    the caller.
    """
    cancel = cancel or threading.Event()
    max_new_tokens = clamp_max_new_tokens(loaded, params.max_new_tokens)
    if len(prompt.ids) + max_new_tokens > loaded.engine.capacity:
        raise ValueError(
            f"The prompt has {len(prompt.ids)} tokens and {max_new_tokens} new tokens were "
            f"requested, more than the engine's {loaded.engine.capacity} positions."
        )
    seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    processors = _logits_processors(loaded, params)
    decoder = StreamDecoder(loaded.tokenizer)
    stop_filter = StopFilter(params.stop_at, _stop_context(loaded, prompt, params))
    pieces: list[str] = []
    stop_reason: StopReason = "length"

    def emit(piece: str) -> None:
        if piece:
            pieces.append(piece)
            on_text(piece)

    engine = loaded.engine
    cache = cache if cache is not None else engine.new_cache()
    reused = min(cache.common_prefix(prompt.ids), len(prompt.ids) - 1)
    sequence = list(prompt.ids)
    started = time.perf_counter()
    first_token_time: float | None = None
    last_token_time = started

    try:
        logits: torch.Tensor | None
        if prompt_logits is not None and cache.tokens == list(prompt.ids):
            logits, reused = prompt_logits, len(prompt.ids)
        else:
            logits = engine.prefill(cache, prompt.ids, cancel)
    except PrefillCancelled:
        logits = None
        stop_reason = "stopped"
    prefilled = time.perf_counter()
    with torch.inference_mode():
        for step in range(max_new_tokens if logits is not None else 0):
            assert logits is not None
            if cancel.is_set():
                stop_reason = "stopped"
                break
            scores = processors(torch.tensor([sequence]), logits[None, :].cpu())
            if params.greedy:
                token_id = int(torch.argmax(scores, dim=-1))
            else:
                probabilities = torch.softmax(scores, dim=-1)
                token_id = int(torch.multinomial(probabilities, 1, generator=generator))
            if token_id in loaded.eos_token_ids:
                stop_reason = "eos"
                break

            last_token_time = time.perf_counter()
            if first_token_time is None:
                first_token_time = last_token_time
            emit(stop_filter.push(decoder.push(token_id)))
            sequence.append(token_id)
            if stop_filter.stop_reason is not None:
                stop_reason = stop_filter.stop_reason
                break
            if step + 1 < max_new_tokens and not cancel.is_set():
                logits = engine.step(cache, token_id)

    if stop_reason == "stopped":
        # Held-back bytes are dropped with their tokens, and the text the stop filter holds back
        # is dropped too, so nothing reaches on_text after a stop.
        decoder.discard_pending()
    elif stop_filter.stop_reason is None:
        emit(stop_filter.finish(decoder.flush()))
        if stop_filter.stop_reason is not None:
            stop_reason = stop_filter.stop_reason
    first = first_token_time if first_token_time is not None else time.perf_counter()
    result = GenerationResult(
        text="".join(pieces),
        token_ids=decoder.ids,
        stop_reason=stop_reason,
        seed=seed,
        prompt=prompt,
        prefill_seconds=first - started,
        decode_seconds=last_token_time - first if first_token_time is not None else 0.0,
        reused_tokens=reused,
        timings={"prompt": prefilled - started},
    )
    log.info(
        "Generated %d tokens (%s) from a %d-token prompt (%d reused from the cache), seed %d, "
        "%.1f tokens/s",
        len(result.token_ids),
        stop_reason,
        prompt.used,
        reused,
        seed,
        result.tokens_per_second,
    )
    return result


def stream_alternatives(
    loaded: LoadedModel,
    prompt: Prompt,
    params: SamplingParams,
    count: int,
    on_text: Callable[[int, str], None],
    cancel: threading.Event | None = None,
    cache: KVCache | None = None,
) -> list[GenerationResult]:
    """Generate `count` completions of `prompt` one after another, computing the prompt once.

    Completion i uses seed `params.seed + i` (a random seed when `params.seed` is None), so a
    fixed seed reproduces every alternative. `on_text(i, piece)` receives completion i's pieces.
    After each completion the cache is cut back to the prompt, whose keys and values and last
    logits serve the next one. A cancel stops the current completion (its result says
    "stopped") and starts no further one. Exceptions from the model propagate to the caller.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}.")
    cancel = cancel or threading.Event()
    engine = loaded.engine
    cache = cache if cache is not None else engine.new_cache()
    base_seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
    try:
        logits = engine.prefill(cache, prompt.ids, cancel)
    except PrefillCancelled:
        return []
    results: list[GenerationResult] = []
    for index in range(count):
        if cancel.is_set():
            break
        cache.truncate(len(prompt.ids))
        result = stream_completion(
            loaded,
            prompt,
            params.replace(seed=(base_seed + index) % 2**32),
            functools.partial(on_text, index),
            cancel,
            cache,
            prompt_logits=logits,
        )
        results.append(result)
    return results
