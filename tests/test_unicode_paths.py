"""Every file the app writes, in folders and under names with accents, apostrophes and spaces.

The profile (settings, log, user data) lives in "Données de l'étude", the model in
"Modèles juridiques/kl3m tiny", and the document is named with an accent and a dash.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from kl3m_desk import paths
from kl3m_desk.download import RECORD_FILE, download_model, plan_download
from kl3m_desk.fingerprint import CACHE_FILE, fingerprint_weights
from kl3m_desk.logging_setup import LOG_FILE_NAME, configure_logging
from kl3m_desk.model import load_model
from kl3m_desk.params import SamplingParams
from kl3m_desk.review import load_records, sidecar_path
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.editor import document_text
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from tests.mock_hub import MockHub, NetworkGuard, loopback_guard

PROFILE_NAME = "Données de l'étude"
MODELS_NAME = "Modèles juridiques"
DOCUMENT_NAME = "Contrat de sous-traitance — révision 2.txt"
DOCUMENT_TEXT = "1. Objet. Le Prestataire fournit les Services décrits à l'Annexe A.\n\n2. Fees. "
REPO = "alea-institute/kl3m-tiny-test"


@pytest.fixture
def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the profile at a folder whose name has accents, an apostrophe and spaces."""
    home = tmp_path / PROFILE_NAME
    monkeypatch.setenv(paths.HOME_VARIABLE, str(home))
    return home


@pytest.fixture
def model_folder(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny model in "Modèles juridiques/kl3m tiny"."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / MODELS_NAME / "kl3m tiny"))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture(autouse=True)
def discard_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer "Discard" to the unsaved-changes question, which would block a test run."""
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)


def test_settings_in_accented_profile(profile: Path, model_folder: Path) -> None:
    settings = Settings.load()
    assert settings.path == profile / "config" / "settings.json"
    settings.sampling = SamplingParams.defaults().replace(temperature=0.8)
    settings.remember_model_dir(model_folder)
    settings.save()

    loaded = Settings.load()
    assert loaded.load_warnings == []
    assert loaded.sampling.temperature == 0.8
    assert loaded.last_model_dir == model_folder
    assert loaded.model_dirs == [model_folder]
    assert MODELS_NAME in settings.path.read_text(encoding="utf-8")  # stored as UTF-8, unescaped


def test_damaged_settings_copy_in_accented_profile(profile: Path) -> None:
    path = profile / "config" / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"device": "cpu", "sampling": {"top_k": "plusieurs"}}', encoding="utf-8")
    settings = Settings.load()
    assert settings.device == "cpu"
    copies = list(path.parent.glob("settings.json.invalid-*"))
    assert len(copies) == 1
    assert str(copies[0]) in settings.load_warnings[-1]


def test_log_file_in_accented_profile(profile: Path, restore_logging: None) -> None:
    log_path = configure_logging(debug=False)
    logging.getLogger("kl3m_desk.test").warning("Opened %s", DOCUMENT_NAME)
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert log_path == profile / "logs" / LOG_FILE_NAME
    assert f"Opened {DOCUMENT_NAME}" in log_path.read_text(encoding="utf-8")


def test_model_and_hash_cache_in_accented_folders(profile: Path, model_folder: Path) -> None:
    loaded = load_model(model_folder)
    assert loaded.folder == model_folder
    assert loaded.parameter_count > 0

    fingerprint = fingerprint_weights(model_folder)
    cache_path = profile / "data" / CACHE_FILE
    cache = json.loads(cache_path.read_text(encoding="utf-8"))
    assert [Path(key) for key in cache] == [(model_folder / "model.safetensors").resolve()]
    assert fingerprint_weights(model_folder).sha256 == fingerprint.sha256


def test_document_sidecar_and_export(
    qtbot: QtBot, profile: Path, model_folder: Path, tmp_path: Path
) -> None:
    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(max_new_tokens=12, seed=5)
    settings.limitations_shown = True
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    window.show()
    window.load_model(model_folder)
    qtbot.waitUntil(lambda: window.controller.model is not None, timeout=30_000)

    folder = tmp_path / "Dossiers clients" / "Société Générale d'Études"
    folder.mkdir(parents=True)
    document = folder / DOCUMENT_NAME
    document.write_text(DOCUMENT_TEXT, encoding="utf-8")
    assert window.open_document(document, ask=False)
    cursor = window.editor.textCursor()
    cursor.setPosition(len(DOCUMENT_TEXT))
    window.editor.setTextCursor(cursor)
    with qtbot.waitSignal(window.controller.generation_finished, timeout=60_000):
        window.generate()
    qtbot.waitUntil(lambda: not window.controller.is_generating, timeout=10_000)
    text = document_text(window.editor.document())
    assert text.startswith(DOCUMENT_TEXT)
    assert len(window.review.marks.passages()) == 1

    window.review.confirm_unreviewed = lambda _verb: True  # type: ignore[method-assign]
    assert window.save_to(document)
    assert document.read_text(encoding="utf-8") == text
    sidecar = sidecar_path(document)
    assert sidecar.name == DOCUMENT_NAME + ".kl3m.json"
    records = load_records(sidecar)
    assert len(records) == 1
    assert records[0].model.folder == str(model_folder)

    exported = folder / "Registre des générations — révision 2.json"
    assert window.review.export_to(exported)
    assert [record.text for record in load_records(exported)] == [records[0].text]

    assert window.open_document(document, ask=False)
    assert document_text(window.editor.document()) == text
    assert len(window.review.marks.passages()) == 1
    assert window.message_bar.messages() == []
    assert Settings.load().last_model_dir == model_folder
    window.controller.shutdown()


@pytest.fixture
def loopback_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """Fail the test on any connection or name lookup outside 127.0.0.0/8 and ::1."""
    with loopback_guard(tmp_path / "network-guard.log", monkeypatch) as guard:
        yield guard


def test_download_into_accented_folder(
    profile: Path, tiny_model_dir: Path, tmp_path: Path, loopback_only: NetworkGuard
) -> None:
    with MockHub() as hub:
        hub.add_folder(REPO, tiny_model_dir)
        plan = plan_download(REPO, endpoint=hub.url, timeout=10.0)
        target = tmp_path / MODELS_NAME / "kl3m tiny téléchargé"
        folder = download_model(plan, target, endpoint=hub.url, timeout=10.0)

        default_folder = download_model(plan, endpoint=hub.url, timeout=10.0)

    assert folder == target
    assert json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))["complete"] is True
    assert load_model(folder).parameter_count > 0
    assert default_folder.is_relative_to(profile / "data")
    assert load_model(default_folder).parameter_count > 0
