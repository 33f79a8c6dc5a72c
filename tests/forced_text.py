"""Make the tiny random model write a chosen text, so tests can check where a completion stops."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from kl3m_desk.engine import KVCache
from kl3m_desk.model import LoadedModel

# Added to the logit of the chosen token: far above any logit of the tiny model, so the token wins
# under greedy decoding, any temperature, top p, top k and the repetition penalty.
FORCING_BIAS = 1.0e4


class ForcedText:
    """Raises the logit of the next token of `text` after every forward pass of the model.

    A forward pass that computes one token, the one forced before it, continues the text. Any
    other pass is a prompt being computed, so the text starts again from its first token. After
    the last token of `text` comes EOS when `end_with_eos` is set, and then the model's own
    choices.
    """

    def __init__(self, model: LoadedModel, text: str, end_with_eos: bool = False) -> None:
        self.target: list[int] = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
        if end_with_eos:
            self.target.append(min(model.eos_token_ids))
        self._original = model.engine.forward
        self._forced = 0
        self._length_after = -1

    def forward(self, cache: KVCache, ids: Sequence[int]) -> torch.Tensor:
        """Run the model's forward pass, then raise the logit of the next token of the text."""
        length_before = cache.length
        logits = self._original(cache, ids)
        continues = (
            len(ids) == 1
            and self._forced > 0
            and length_before == self._length_after
            and ids[0] == self.target[self._forced - 1]
        )
        if not continues:
            self._forced = 0
        self._length_after = cache.length
        if self._forced < len(self.target):
            logits = logits.clone()
            logits[self.target[self._forced]] += FORCING_BIAS
            self._forced += 1
        return logits


def force_text(
    monkeypatch: pytest.MonkeyPatch, model: LoadedModel, text: str, end_with_eos: bool = False
) -> ForcedText:
    """Make `model` generate `text` until the test ends; returns the forcing hook."""
    forced = ForcedText(model, text, end_with_eos)
    monkeypatch.setattr(model.engine, "forward", forced.forward)
    return forced
