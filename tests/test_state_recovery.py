"""Damaged settings, records and cache files: the app starts, keeps a copy and reports it once."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from kl3m_desk import paths
from kl3m_desk.download import RECORD_FILE, DownloadError, download_model, plan_download
from kl3m_desk.fingerprint import CACHE_FILE, fingerprint_weights
from kl3m_desk.manifest import MANIFEST_FILE, ManifestError, verify_manifest, write_manifest
from kl3m_desk.params import PARAMETERS_BY_NAME, SamplingParams
from kl3m_desk.review import FILE_FORMAT, FILE_VERSION, sidecar_path
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.editor import document_text
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from tests.mock_hub import MockHub, loopback_guard

DEFAULTS = Settings(path=Path("unused"))
REPO = "alea-institute/kl3m-tiny-test"


@pytest.fixture(autouse=True)
def discard_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer "Discard" to the unsaved-changes question, which would block a test run."""
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)


def start_window(qtbot: QtBot) -> MainWindow:
    """Start the window as the app does: settings from the profile's settings file."""
    window = MainWindow(Settings.load(), load_library())
    qtbot.addWidget(window)
    window.show()
    return window


def settings_path() -> Path:
    path = paths.config_dir() / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.invalid-*"))


GOOD_SAMPLING = {"temperature": 0.9, "top_p": 0.5, "top_k": 40}

# name, bytes of settings.json, words the message must contain
WHOLE_FILE_CASES = [
    ("empty", b"", "is empty"),
    ("whitespace only", b"  \n\n", "is empty"),
    ("cut off", b'{"sampling": {"temperature": 0.9, "top_p": 0.', "not valid JSON"),
    ("not JSON", b"temperature = 0.9\n", "not valid JSON"),
    ("array", b"[1, 2, 3]\n", "JSON array, not an object"),
    ("string", b'"settings"\n', "JSON string, not an object"),
    ("null", b"null\n", "JSON null, not an object"),
    ("not UTF-8", b'{"device": "\xff\xfe"}', "could not be read"),
]


@pytest.mark.parametrize(
    ("content", "reason"),
    [case[1:] for case in WHOLE_FILE_CASES],
    ids=[case[0] for case in WHOLE_FILE_CASES],
)
def test_unreadable_settings_start_on_defaults(qtbot: QtBot, content: bytes, reason: str) -> None:
    path = settings_path()
    path.write_bytes(content)

    window = start_window(qtbot)

    assert window.settings.sampling == SamplingParams.defaults()
    assert window.parameters_panel.params() == SamplingParams.defaults()
    assert window.settings.device == DEFAULTS.device
    assert window.settings.model_dirs == []
    copies = backups(path)
    assert len(copies) == 1
    assert copies[0].read_bytes() == content
    messages = window.message_bar.messages()
    assert len(messages) == 1
    assert str(path) in messages[0]
    assert reason in messages[0]
    assert str(copies[0]) in messages[0]
    window.close()

    again = start_window(qtbot)
    assert again.message_bar.messages() == []
    assert len(backups(path)) == 1
    again.close()


# name, settings.json content, the values expected after loading
WRONG_TYPE_CASES = [
    (
        "sampling value",
        {"sampling": {**GOOD_SAMPLING, "temperature": "hot"}, "device": "cpu"},
        {"temperature": 0.5, "top_p": 0.5, "top_k": 40, "device": "cpu"},
    ),
    (
        "sampling not an object",
        {"sampling": [0.9], "device": "cpu", "precision": "exact"},
        {"temperature": 0.5, "device": "cpu", "precision": "exact"},
    ),
    (
        "device",
        {"sampling": GOOD_SAMPLING, "device": 3},
        {"temperature": 0.9, "top_k": 40, "device": "auto"},
    ),
    (
        "precision",
        {"sampling": GOOD_SAMPLING, "precision": ["fast"]},
        {"temperature": 0.9, "precision": "fast"},
    ),
    (
        "model folders",
        {"sampling": GOOD_SAMPLING, "model_dirs": "/models", "last_model_dir": 12},
        {"temperature": 0.9, "model_dirs": [], "last_model_dir": None},
    ),
    (
        "limitations shown",
        {"sampling": GOOD_SAMPLING, "limitations_shown": "yes", "device": "cpu"},
        {"temperature": 0.9, "limitations_shown": False, "device": "cpu"},
    ),
    (
        "suggestions",
        {"sampling": GOOD_SAMPLING, "suggestions": {"inline": "yes", "delay_ms": 900}},
        {"temperature": 0.9, "inline": False, "delay_ms": 900},
    ),
    (
        "stop option",
        {"sampling": {**GOOD_SAMPLING, "stop_at": 4}},
        {"temperature": 0.9, "stop_at": "none"},
    ),
]


def current_value(window: MainWindow, name: str) -> object:
    settings = window.settings
    if name in PARAMETERS_BY_NAME or name == "stop_at":
        return getattr(window.parameters_panel.params(), name)
    if name in ("inline", "delay_ms"):
        return getattr(settings.suggestions, name)
    return getattr(settings, name)


@pytest.mark.parametrize(
    ("data", "expected"),
    [case[1:] for case in WRONG_TYPE_CASES],
    ids=[case[0] for case in WRONG_TYPE_CASES],
)
def test_wrong_typed_setting_falls_back(
    qtbot: QtBot, data: dict[str, object], expected: dict[str, object]
) -> None:
    path = settings_path()
    content = json.dumps(data, indent=2).encode("utf-8")
    path.write_bytes(content)

    window = start_window(qtbot)

    for name, value in expected.items():
        assert current_value(window, name) == value, name
    copies = backups(path)
    assert len(copies) == 1
    assert copies[0].read_bytes() == content
    messages = window.message_bar.messages()
    assert len(messages) == 1
    assert str(path) in messages[0]
    assert str(copies[0]) in messages[0]
    window.close()

    again = start_window(qtbot)
    assert again.message_bar.messages() == []
    for name, value in expected.items():
        assert current_value(again, name) == value, name
    assert len(backups(path)) == 1
    again.close()


def test_out_of_range_settings_pulled_in(qtbot: QtBot, caplog: pytest.LogCaptureFixture) -> None:
    path = settings_path()
    stored = {
        "temperature": 9.5,
        "top_p": 0,
        "top_k": -3,
        "max_new_tokens": 100_000,
        "repetition_penalty": 0.5,
        "seed": -1,
    }
    path.write_text(json.dumps({"sampling": stored, "device": "cpu"}), encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="kl3m_desk.settings"):
        window = start_window(qtbot)

    params = window.parameters_panel.params()
    assert params.temperature == 2.0
    assert params.top_p == 0.01
    assert params.top_k == 0
    assert params.max_new_tokens == 4095
    assert params.repetition_penalty == 1.0
    assert params.seed == 0
    assert window.settings.device == "cpu"
    messages = window.message_bar.messages()
    assert len(messages) == 1
    for name in stored:
        label = PARAMETERS_BY_NAME[name].label
        assert f"{label} {stored[name]!r}" in messages[0]
        assert f"{label} {stored[name]!r}" in caplog.text
    rewritten = json.loads(path.read_text(encoding="utf-8"))["sampling"]
    assert rewritten["temperature"] == 2.0
    assert rewritten["max_new_tokens"] == 4095
    assert [json.loads(copy.read_text(encoding="utf-8")) for copy in backups(path)] == [
        {"sampling": stored, "device": "cpu"}
    ]
    window.close()


def test_values_in_range_not_reported(qtbot: QtBot) -> None:
    path = settings_path()
    path.write_text(json.dumps({"sampling": {"temperature": 0.333}}), encoding="utf-8")
    window = start_window(qtbot)
    assert window.parameters_panel.params().temperature == 0.33
    assert window.message_bar.messages() == []
    assert backups(path) == []
    window.close()


# --- the records file beside a document --------------------------------------------------

SIDECAR_CASES = [
    ("empty", b""),
    ("cut off", b'{"format": "kl3m-desk-generation-records", "version": 1, "docu'),
    ("array", b"[]"),
    ("not UTF-8", b"\xff\xfe{}"),
    ("passages not a list", None),
    ("record of wrong type", None),
]


def damaged_sidecar(name: str, content: bytes | None, valid: dict[str, object]) -> bytes:
    if content is not None:
        return content
    data = json.loads(json.dumps(valid))
    if name == "passages not a list":
        data["passages"] = "none"
    else:
        data["passages"][0]["record"] = ["not", "an", "object"]
    return json.dumps(data).encode("utf-8")


@pytest.mark.parametrize(
    ("name", "content"), SIDECAR_CASES, ids=[case[0] for case in SIDECAR_CASES]
)
def test_damaged_sidecar_keeps_text(
    qtbot: QtBot, tmp_path: Path, name: str, content: bytes | None
) -> None:
    text = "1. Services. The Supplier shall provide the Services.\n"
    document = tmp_path / "Master agreement.txt"
    document.write_text(text, encoding="utf-8")
    valid = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "document": {"name": document.name, "sha256": "0" * 64, "characters": len(text)},
        "passages": [{"record": {}, "start": 0, "end": 3, "text": "1. "}],
    }
    sidecar = sidecar_path(document)
    damaged = damaged_sidecar(name, content, valid)
    sidecar.write_bytes(damaged)

    window = start_window(qtbot)
    assert window.open_document(document, ask=False)

    assert document_text(window.editor.document()) == text
    assert window.review.marks.passages() == []
    messages = window.message_bar.messages()
    assert len(messages) == 1
    assert str(sidecar) in messages[0]
    assert "opened without review marks" in messages[0]
    if name == "passages not a list":
        assert "must be lists" in messages[0]
    if name == "record of wrong type":
        assert "passage 1, record" in messages[0]
    copies = backups(sidecar)
    assert len(copies) == 1
    assert copies[0].read_bytes() == damaged
    assert copies[0].name in messages[0]
    window.close()


# --- caches the app keeps for itself -----------------------------------------------------

CACHE_CASES = [
    ("empty", b""),
    ("cut off", b'{"/models/a/model.safetensors": {"size": 12'),
    ("array", b"[1, 2]"),
    ("wrong entry types", b'{"x": "not an entry", "y": {"size": "big"}}'),
]


@pytest.mark.parametrize(
    "content", [case[1] for case in CACHE_CASES], ids=[c[0] for c in CACHE_CASES]
)
def test_damaged_hash_cache_rebuilt(
    tiny_model_dir: Path, tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    cache = paths.data_dir() / CACHE_FILE
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(content)

    with caplog.at_level(logging.WARNING):
        fingerprint = fingerprint_weights(folder)

    assert len(fingerprint.sha256) == 64
    assert isinstance(json.loads(cache.read_text(encoding="utf-8")), dict)
    copies = backups(cache)
    if content.startswith(b'{"x"'):  # valid JSON object: bad entries are skipped, not moved
        assert copies == []
    else:
        assert [copy.read_bytes() for copy in copies] == [content]
        assert str(cache) in caplog.text
        assert str(copies[0]) in caplog.text
    assert fingerprint_weights(folder).sha256 == fingerprint.sha256


def test_damaged_verified_record_rebuilt(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    write_manifest(folder, name="kl3m-tiny")
    store = next(iter(paths.data_dir().glob("*")), None)
    assert store is None  # nothing verified yet
    assert verify_manifest(folder)
    stores = list(paths.data_dir().glob("*.json"))
    assert len(stores) == 1
    stores[0].write_bytes(b'["abc", ')
    assert verify_manifest(folder)
    assert [copy.read_bytes() for copy in backups(stores[0])] == [b'["abc", ']
    assert isinstance(json.loads(stores[0].read_text(encoding="utf-8")), list)


@pytest.mark.parametrize(
    "manifest",
    [b"", b'{"files": [1, 2]}', b'{"files": {"model.safetensors": 12}}', b'{"name": "x"}'],
    ids=["empty", "files array", "entry not object", "files missing"],
)
def test_damaged_manifest_reported(tiny_model_dir: Path, tmp_path: Path, manifest: bytes) -> None:
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    (folder / MANIFEST_FILE).write_bytes(manifest)
    with pytest.raises(ManifestError) as raised:
        verify_manifest(folder)
    assert str(folder / MANIFEST_FILE) in str(raised.value)
    assert "Reinstall" in str(raised.value)


@pytest.mark.parametrize(
    "record", [b"", b'{"repo_id": "alea', b"[]"], ids=["empty", "cut off", "array"]
)
def test_damaged_download_record_reported(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: bytes
) -> None:
    target = tmp_path / "models" / "kl3m tiny"
    target.mkdir(parents=True)
    (target / RECORD_FILE).write_bytes(record)
    (target / "notes.txt").write_text("kept", encoding="utf-8")

    with loopback_guard(tmp_path / "network-guard.log", monkeypatch), MockHub() as hub:
        hub.add_folder(REPO, tiny_model_dir)
        plan = plan_download(REPO, endpoint=hub.url, timeout=10.0)
        with pytest.raises(DownloadError) as raised:
            download_model(plan, target, endpoint=hub.url, timeout=10.0)

    assert str(target / RECORD_FILE) in str(raised.value)
    assert "damaged" in str(raised.value)
    assert (target / RECORD_FILE).read_bytes() == record
    assert (target / "notes.txt").read_text(encoding="utf-8") == "kept"
