"""Checksum manifests of bundled model folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kl3m_desk.manifest import MANIFEST_FILE, verify_manifest, write_manifest
from kl3m_desk.model import ModelLoadError, load_model


@pytest.fixture
def bundled_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    write_manifest(folder, name="kl3m-tiny")
    return folder


def test_manifest_names_model(bundled_copy: Path) -> None:
    assert (bundled_copy / MANIFEST_FILE).is_file()
    assert load_model(bundled_copy).name == "kl3m-tiny"


def test_damaged_weights_rejected(bundled_copy: Path) -> None:
    weights = bundled_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError) as raised:
        load_model(bundled_copy)
    assert "model.safetensors" in str(raised.value)
    assert "damaged" in str(raised.value)


def test_missing_file_rejected(bundled_copy: Path) -> None:
    (bundled_copy / "generation_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"generation_config\.json is missing"):
        load_model(bundled_copy)


def test_verified_manifest_not_read_again(bundled_copy: Path) -> None:
    assert verify_manifest(bundled_copy)
    weights = bundled_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert verify_manifest(bundled_copy)
    with pytest.raises(Exception, match="damaged"):
        verify_manifest(bundled_copy, force=True)


def test_folder_without_manifest(tiny_model_dir: Path) -> None:
    assert not verify_manifest(tiny_model_dir)
