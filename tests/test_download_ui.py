"""Downloading kl3m-002-520m from the first-run panel, against a mock Hub on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from kl3m_desk.download import DEFAULT_REPO
from kl3m_desk.model_catalog import models_dir
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from tests.mock_hub import MockHub, loopback_guard


@pytest.fixture(autouse=True)
def loopback_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test on any connection or name lookup outside 127.0.0.0/8 and ::1."""
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)
    with loopback_guard(tmp_path / "network-guard.log", monkeypatch):
        yield


@pytest.fixture
def hub(tiny_model_dir: Path) -> Iterator[MockHub]:
    with MockHub() as server:
        server.add_folder(DEFAULT_REPO, tiny_model_dir)
        yield server


def make_window(qtbot: QtBot, hub: MockHub) -> MainWindow:
    settings = Settings.load()
    settings.limitations_shown = True
    window = MainWindow(settings, load_library())
    window.download_endpoint = hub.url
    qtbot.addWidget(window)
    window.show()
    return window


def test_download_needs_consent(
    qtbot: QtBot, hub: MockHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = make_window(qtbot, hub)
    monkeypatch.setattr(window, "confirm_download", lambda: False)
    window.first_run.download_button.click()
    qtbot.wait(300)
    assert hub.requests == []
    assert window.first_run.download_button.isEnabled()
    window.controller.shutdown()


def test_download_then_ready(qtbot: QtBot, hub: MockHub, monkeypatch: pytest.MonkeyPatch) -> None:
    window = make_window(qtbot, hub)
    monkeypatch.setattr(window, "confirm_download", lambda: True)
    with qtbot.waitSignal(window.controller.model_ready, timeout=120_000) as blocker:
        window.first_run.download_button.click()
        assert window.first_run.cancel_button.isVisible()
    loaded = blocker.args[0]
    assert loaded.folder == models_dir() / "kl3m-002-520m"
    assert not window.first_run.isVisible()
    assert window.generate_action.isEnabled()
    window.controller.shutdown()


def test_download_cancel_then_resume(
    qtbot: QtBot, hub: MockHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = make_window(qtbot, hub)
    monkeypatch.setattr(window, "confirm_download", lambda: True)
    hub.stall_after(1000)
    window.first_run.download_button.click()
    qtbot.waitUntil(lambda: window.first_run.progress.maximum() > 0, timeout=60_000)
    window.first_run.cancel_button.click()
    qtbot.waitUntil(lambda: window.first_run.download_button.isEnabled(), timeout=30_000)
    assert "cancelled" in window.first_run.status_label.text()
    assert window.controller.model is None

    hub.release_stall()
    with qtbot.waitSignal(window.controller.model_ready, timeout=120_000):
        window.first_run.download_button.click()
    window.controller.shutdown()


def test_download_offline_message(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.mock_hub import closed_loopback_port

    settings = Settings.load()
    window = MainWindow(settings, load_library())
    window.download_endpoint = f"http://127.0.0.1:{closed_loopback_port()}"
    qtbot.addWidget(window)
    window.show()
    monkeypatch.setattr(window, "confirm_download", lambda: True)
    window.first_run.download_button.click()
    qtbot.waitUntil(lambda: window.message_bar.isVisible(), timeout=60_000)
    assert any("internet" in text.lower() for text in window.message_bar.messages())
    assert window.first_run.download_button.isEnabled()
    window.controller.shutdown()


def test_pickle_only_download_imported(
    qtbot: QtBot, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import load_file

    repo_folder = tmp_path / "pickle-repo"
    repo_folder.mkdir()
    for path in tiny_model_dir.iterdir():
        if path.suffix != ".safetensors":
            (repo_folder / path.name).write_bytes(path.read_bytes())
    weights = load_file(str(tiny_model_dir / "model.safetensors"))
    torch.save(weights, repo_folder / "pytorch_model.bin")
    with MockHub() as server:
        server.add_folder(DEFAULT_REPO, repo_folder)
        window = make_window(qtbot, server)
        monkeypatch.setattr(window, "confirm_download", lambda: True)
        with qtbot.waitSignal(window.controller.model_ready, timeout=120_000) as blocker:
            window.first_run.download_button.click()
    loaded = blocker.args[0]
    assert loaded.folder.parent == models_dir()
    assert loaded.folder.name != "kl3m-002-520m"
    assert (loaded.folder / "model.safetensors").is_file()
    window.controller.shutdown()
