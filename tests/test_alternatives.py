"""Alternatives: one prompt computed once, several seeded completions, a choice inserted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from kl3m_desk.engine import KVCache
from kl3m_desk.generation import build_prompt, stream_alternatives, stream_completion
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import SamplingParams
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.editor import document_text
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice

DOCUMENT = (
    "1. Confidentiality. The Receiving Party shall hold the Confidential Information in strict "
    "confidence and shall not disclose it to any third party without the prior written consent "
    "of the Disclosing Party. "
)


def sampled(seed: int, max_new_tokens: int = 24) -> SamplingParams:
    return SamplingParams.defaults().replace(
        temperature=1.0, max_new_tokens=max_new_tokens, seed=seed
    )


@pytest.fixture
def forward_calls(tiny_model: LoadedModel) -> Iterator[list[list[int]]]:
    """Record the token ids of every forward pass of the tiny model's engine."""
    calls: list[list[int]] = []
    original = tiny_model.engine.forward

    def forward(cache: KVCache, ids: list[int]) -> object:
        calls.append(list(ids))
        return original(cache, ids)

    tiny_model.engine.forward = forward  # type: ignore[method-assign,assignment]
    yield calls
    del tiny_model.engine.forward


def test_alternatives_compute_prompt_once(
    tiny_model: LoadedModel, forward_calls: list[list[int]]
) -> None:
    prompt = build_prompt(tiny_model, DOCUMENT * 6, 24)
    assert prompt.used > 256  # more than one prefill chunk
    results = stream_alternatives(tiny_model, prompt, sampled(7), 3, lambda _i, _piece: None)

    assert len(results) == 3
    prefill: list[int] = []
    calls = 0
    while len(prefill) < prompt.used:
        prefill += forward_calls[calls]
        calls += 1
    assert prefill == list(prompt.ids)
    assert all(len(call) == 1 for call in forward_calls[calls:])
    generated = sum(len(result.token_ids) for result in results)
    assert len(forward_calls) - calls <= generated
    assert [result.seed for result in results] == [7, 8, 9]


def test_alternatives_reproduce_with_seed(tiny_model: LoadedModel) -> None:
    prompt = build_prompt(tiny_model, DOCUMENT, 24)
    texts: dict[int, list[str]] = {0: [], 1: [], 2: []}
    results = stream_alternatives(
        tiny_model, prompt, sampled(7), 3, lambda index, piece: texts[index].append(piece)
    )
    again = stream_alternatives(tiny_model, prompt, sampled(7), 3, lambda _i, _piece: None)

    assert [r.text for r in results] == [r.text for r in again]
    assert ["".join(texts[index]) for index in range(3)] == [r.text for r in results]
    assert len({r.text for r in results}) > 1, "different seeds should give different text"
    for result in results:
        alone = stream_completion(tiny_model, prompt, sampled(result.seed), lambda _piece: None)
        assert alone.token_ids == result.token_ids


def test_alternatives_reject_zero_count(tiny_model: LoadedModel) -> None:
    prompt = build_prompt(tiny_model, DOCUMENT, 24)
    with pytest.raises(ValueError, match="at least 1"):
        stream_alternatives(tiny_model, prompt, sampled(1), 0, lambda _i, _piece: None)


@pytest.fixture
def window(
    qtbot: QtBot, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MainWindow]:
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)
    settings = Settings.load()
    settings.sampling = sampled(21)
    settings.limitations_shown = True
    created = MainWindow(settings, load_library())
    qtbot.addWidget(created)
    created.show()
    created.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: created.controller.model is not None, timeout=30_000)
    yield created
    created.controller.shutdown()


def request_alternatives(qtbot: QtBot, window: MainWindow) -> None:
    with qtbot.waitSignal(window.controller.alternatives_finished, timeout=60_000):
        window.alternatives.generate_action.trigger()


def test_window_shows_and_cycles_alternatives(qtbot: QtBot, window: MainWindow) -> None:
    window.editor.setPlainText(DOCUMENT)
    window.editor.moveCursor(window.editor.textCursor().MoveOperation.End)
    request_alternatives(qtbot, window)
    panel = window.alternatives.panel

    assert window.alternatives.dock.isVisible()
    assert len(panel.alternatives) == 3
    assert document_text(window.editor.document()) == DOCUMENT  # nothing inserted yet
    assert panel.chosen == 0
    window.alternatives.next_action.trigger()
    assert panel.chosen == 1
    window.alternatives.previous_action.trigger()
    window.alternatives.previous_action.trigger()
    assert panel.chosen == 2

    # More keeps the earlier alternatives.
    earlier = [alternative.text for alternative in panel.alternatives]
    with qtbot.waitSignal(window.controller.alternatives_finished, timeout=60_000):
        panel.regenerate_button.click()
    assert len(panel.alternatives) == 6
    assert [alternative.text for alternative in panel.alternatives[:3]] == earlier
    seeds = [alternative.result.seed for alternative in panel.alternatives if alternative.result]
    assert seeds == [21, 22, 23, 24, 25, 26]


def test_insert_alternative_is_one_undo_step(qtbot: QtBot, window: MainWindow) -> None:
    window.editor.setPlainText(DOCUMENT)
    window.editor.moveCursor(window.editor.textCursor().MoveOperation.End)
    request_alternatives(qtbot, window)
    panel = window.alternatives.panel
    panel.choose(1)
    chosen = panel.alternatives[1].text
    assert chosen

    window.editor.moveCursor(window.editor.textCursor().MoveOperation.Start)
    window.editor.insertPlainText("AGREEMENT\n")  # an edit before the spot moves it along
    window.alternatives.insert_action.trigger()
    expected = "AGREEMENT\n" + DOCUMENT + chosen
    assert document_text(window.editor.document()) == expected
    assert window.review.counter_label.text() != ""
    assert "1" in window.review.counter_label.text()

    window.undo()
    assert document_text(window.editor.document()) == "AGREEMENT\n" + DOCUMENT


def test_screen_reader_hears_each_completion_once(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PySide6.QtGui import QAccessible, QAccessibleAnnouncementEvent

    heard: list[str] = []
    original = QAccessible.updateAccessibility

    def listen(event: object) -> None:
        if isinstance(event, QAccessibleAnnouncementEvent):
            heard.append(event.message())
        original(event)

    monkeypatch.setattr(QAccessible, "updateAccessibility", listen)
    window.editor.setPlainText(DOCUMENT)
    window.editor.moveCursor(window.editor.textCursor().MoveOperation.End)
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000) as blocker:
        window.generate()
    result = blocker.args[0]
    assert len(result.token_ids) > 5  # many pieces streamed, one announcement
    assert heard == [f"Completion ready, {len(result.text.split())} words"]

    request_alternatives(qtbot, window)
    assert heard[1:] == ["3 alternatives ready"]


def test_status_bar_counts_alternatives(qtbot: QtBot, window: MainWindow) -> None:
    window.editor.setPlainText(DOCUMENT)
    window.editor.moveCursor(window.editor.textCursor().MoveOperation.End)
    request_alternatives(qtbot, window)
    tokens = sum(
        len(alternative.result.token_ids)
        for alternative in window.alternatives.panel.alternatives
        if alternative.result is not None
    )
    assert window.speed_label.text() == f"3 alternatives, {tokens} tokens"
