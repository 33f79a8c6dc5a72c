"""First-run panel, model catalog and model manager."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtWidgets import QFileDialog
from pytestqt.qtbot import QtBot

from kl3m_desk.model_catalog import ModelSource, format_parameters, list_models, models_dir
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from kl3m_desk.ui.model_manager import COLUMNS, ModelManagerDialog


@pytest.fixture(autouse=True)
def discard_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)


def stored_parameters(folder: Path) -> int:
    """Count the parameters in the folder's model.safetensors by loading every tensor."""
    from safetensors.torch import load_file

    return sum(tensor.numel() for tensor in load_file(str(folder / "model.safetensors")).values())


@pytest.fixture
def downloaded_model(tiny_model_dir: Path) -> Path:
    """A copy of the tiny model where downloads go."""
    target = models_dir() / "kl3m-tiny-download"
    shutil.copytree(tiny_model_dir, target)
    return target


def test_first_run_panel_then_ready(
    qtbot: QtBot, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = MainWindow(Settings.load(), load_library())
    qtbot.addWidget(window)
    window.show()
    assert window.first_run.isVisible()
    assert "kl3m-002-520m" in window.first_run.download_button.text()
    assert not window.first_run.previous_button.isVisible()
    assert not window.generate_action.isEnabled()

    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", lambda *_args, **_kwargs: str(tiny_model_dir)
    )
    window.first_run.choose_button.click()
    qtbot.waitUntil(lambda: window.generate_action.isEnabled(), timeout=30_000)
    assert not window.first_run.isVisible()
    assert window.controller.model is not None
    assert window.controller.model.folder == tiny_model_dir
    window.controller.shutdown()


def test_first_run_offers_previous_download(qtbot: QtBot, downloaded_model: Path) -> None:
    window = MainWindow(Settings.load(), load_library())
    qtbot.addWidget(window)
    window.show()
    assert window.first_run.previous_button.isVisible()
    assert window.first_run.previous_box.count() == 1
    window.first_run.previous_button.click()
    qtbot.waitUntil(lambda: window.controller.model is not None, timeout=30_000)
    assert window.controller.model.folder == downloaded_model
    window.controller.shutdown()


def test_catalog_describes_models(downloaded_model: Path, tiny_model_dir: Path) -> None:
    settings = Settings.load()
    settings.remember_model_dir(tiny_model_dir)
    entries = list_models(settings)
    assert [entry.source for entry in entries] == [ModelSource.DOWNLOADED, ModelSource.CHOSEN]
    downloaded = entries[0]
    assert downloaded.name == "kl3m-tiny-download"
    assert downloaded.architecture == "MixtralForCausalLM"
    assert downloaded.parameter_count == stored_parameters(downloaded_model)
    assert downloaded.dtypes == ("float32",)
    assert downloaded.size_bytes > downloaded.parameter_count * 4
    assert downloaded.problem == ""
    assert downloaded.removable
    assert not entries[1].removable


def test_catalog_reports_broken_folder(tmp_path: Path) -> None:
    settings = Settings.load()
    settings.remember_model_dir(tmp_path / "gone")
    entries = list_models(settings)
    assert len(entries) == 1
    assert "does not exist" in entries[0].problem


def test_manager_lists_and_loads(
    qtbot: QtBot, downloaded_model: Path, tiny_model_dir: Path
) -> None:
    settings = Settings.load()
    settings.remember_model_dir(tiny_model_dir)
    dialog = ModelManagerDialog(settings, current=None)
    qtbot.addWidget(dialog)
    assert dialog.table.rowCount() == 2
    assert dialog.table.item(0, COLUMNS.index("Name")).text() == "kl3m-tiny-download"
    assert dialog.table.item(0, COLUMNS.index("Architecture")).text() == "MixtralForCausalLM"
    expected = format_parameters(stored_parameters(downloaded_model))
    assert dialog.table.item(0, COLUMNS.index("Parameters")).text() == expected
    assert dialog.table.item(0, COLUMNS.index("Weights")).text() == "float32"
    dialog.table.selectRow(1)
    with qtbot.waitSignal(dialog.model_chosen) as blocker:
        dialog.load_button.click()
    assert blocker.args[0] == tiny_model_dir


def test_manager_removes_download(
    qtbot: QtBot, downloaded_model: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.load()
    settings.remember_model_dir(downloaded_model)
    settings.remember_model_dir(tiny_model_dir)
    dialog = ModelManagerDialog(settings, current=tiny_model_dir)
    qtbot.addWidget(dialog)
    monkeypatch.setattr(dialog, "confirm_removal", lambda _entry: True)
    dialog.table.selectRow(0)
    assert dialog.remove_button.isEnabled()
    with qtbot.waitSignal(dialog.settings_changed):
        dialog.remove_button.click()
    assert not downloaded_model.exists()
    assert downloaded_model not in settings.model_dirs
    assert dialog.table.rowCount() == 1
    dialog.table.selectRow(0)
    assert not dialog.remove_button.isEnabled()
    assert tiny_model_dir.exists()


def test_switch_model_without_restart(
    qtbot: QtBot, downloaded_model: Path, tiny_model_dir: Path
) -> None:
    settings = Settings.load()
    settings.limitations_shown = True
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    window.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: window.controller.model is not None, timeout=30_000)
    with qtbot.waitSignal(window.controller.model_ready, timeout=30_000):
        window.load_model(downloaded_model)
    assert window.controller.model is not None
    assert window.controller.model.folder == downloaded_model
    assert "kl3m-tiny-download" in window.model_label.text()
    window.controller.shutdown()


@pytest.fixture
def pickle_only_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model as a folder with only pytorch_model.bin for weights."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickle-model"
    folder.mkdir()
    for path in tiny_model_dir.iterdir():
        if path.suffix != ".safetensors":
            shutil.copyfile(path, folder / path.name)
    torch.save(load_file(str(tiny_model_dir / "model.safetensors")), folder / "pytorch_model.bin")
    return folder


def test_pickle_folder_imported_then_loaded(qtbot: QtBot, pickle_only_model: Path) -> None:
    settings = Settings.load()
    settings.limitations_shown = True
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    with qtbot.waitSignal(window.controller.model_ready, timeout=60_000) as blocker:
        window.load_model(pickle_only_model)
    loaded = blocker.args[0]
    assert loaded.folder.parent == models_dir()
    assert (loaded.folder / "model.safetensors").is_file()
    assert not (loaded.folder / "pytorch_model.bin").exists()
    window.controller.shutdown()


def test_cancel_load_keeps_previous_model(
    qtbot: QtBot, tiny_model_dir: Path, pickle_only_model: Path
) -> None:
    settings = Settings.load()
    settings.limitations_shown = True
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.controller.model_ready, timeout=30_000):
        window.load_model(tiny_model_dir)
    window.load_model(pickle_only_model)
    assert window.cancel_load_button.isVisible()
    window.cancel_load_button.click()
    assert not window.load_progress.isVisible()
    qtbot.wait(1500)
    assert window.controller.model is not None
    assert window.controller.model.folder == tiny_model_dir
    assert window.generate_action.isEnabled()
    window.controller.shutdown()


def test_invalid_device_override_falls_back(qtbot: QtBot, tiny_model_dir: Path) -> None:
    settings = Settings.load()
    settings.limitations_shown = True
    settings.device = "mps"  # as if copied from a Mac; this test machine has no MPS
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    with qtbot.waitSignal(window.controller.model_ready, timeout=30_000) as blocker:
        window.load_model(tiny_model_dir)
    loaded = blocker.args[0]
    assert loaded.device.type == "cpu"
    assert "mps" in loaded.device_reason
    assert "automatic choice" in loaded.device_reason
    window.controller.shutdown()


def test_precision_override_reloads_model(qtbot: QtBot, tiny_model_dir: Path) -> None:
    settings = Settings.load()
    settings.limitations_shown = True
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    with qtbot.waitSignal(window.controller.model_ready, timeout=30_000):
        window.load_model(tiny_model_dir)
    dialog = ModelManagerDialog(window.settings, tiny_model_dir, window)
    dialog.placement_changed.connect(window._placement_changed)
    qtbot.addWidget(dialog)
    assert dialog.device_box.itemText(0) == "auto"
    labels = [dialog.precision_box.itemText(i) for i in range(dialog.precision_box.count())]
    assert labels == ["Fast", "Exact"]
    with qtbot.waitSignal(window.controller.model_ready, timeout=30_000) as blocker:
        dialog.precision_box.setCurrentText("Exact")
    assert blocker.args[0].dtype_name == "float32"
    assert blocker.args[0].precision == "Exact"
    assert "Exact" in window.model_label.text()
    assert Settings.load().precision == "exact"
    assert "float32" in dialog.placement_label.text()
    window.controller.shutdown()
