"""Model folder loading: the errors a user can meet, and loading with no network."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch

from kl3m_desk.generation import build_prompt, stream_completion
from kl3m_desk.model import ModelLoadError, inspect_model_folder, load_model
from kl3m_desk.params import SamplingParams


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model folder that a test may break."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model copy"))


def test_missing_folder_named(tmp_path: Path) -> None:
    missing = tmp_path / "kl3m-002-520m"
    with pytest.raises(ModelLoadError) as raised:
        load_model(missing)
    assert str(missing) in str(raised.value)
    assert "does not exist" in str(raised.value)


def test_file_instead_of_folder(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file, not a model folder"):
        load_model(path)


def test_folder_without_weights_named(model_copy: Path) -> None:
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as raised:
        load_model(model_copy)
    assert str(model_copy) in str(raised.value)
    assert "model.safetensors is missing" in str(raised.value)


def test_pickle_only_folder_rejected(model_copy: Path) -> None:
    (model_copy / "model.safetensors").unlink()
    (model_copy / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ModelLoadError) as raised:
        load_model(model_copy)
    assert "pytorch_model.bin" in str(raised.value)
    assert "pickle" in str(raised.value)


def test_missing_config_named(model_copy: Path) -> None:
    (model_copy / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"missing config\.json"):
        load_model(model_copy)


def test_invalid_config_named(model_copy: Path) -> None:
    (model_copy / "config.json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(ModelLoadError) as raised:
        load_model(model_copy)
    assert str(model_copy / "config.json") in str(raised.value)
    assert "not a valid model configuration" in str(raised.value)


def test_truncated_weights_named(model_copy: Path) -> None:
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as raised:
        load_model(model_copy)
    assert "model.safetensors" in str(raised.value)
    assert "invalid or incomplete" in str(raised.value)


def test_missing_tokenizer_named(model_copy: Path) -> None:
    (model_copy / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is missing"):
        load_model(model_copy)


def test_missing_shard_named(model_copy: Path) -> None:
    (model_copy / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}
    (model_copy / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"model-00001-of-00002\.safetensors"):
        load_model(model_copy)


def test_loaded_model_description(tiny_model_dir: Path) -> None:
    steps: list[tuple[int, int, str]] = []
    loaded = load_model(tiny_model_dir, progress=lambda *step: steps.append(step))
    assert loaded.max_positions == 1024
    assert loaded.dtype == torch.float32
    assert loaded.model.config.sliding_window == 256
    assert loaded.model.config.num_local_experts == 4
    assert loaded.model.config.num_experts_per_tok == 2
    assert loaded.describe() == f"{tiny_model_dir.name} · Exact · CPU float32"
    assert 1 not in loaded.suppressed_token_ids
    assert steps[0][0] == 0
    assert steps[-1][0] == steps[-1][1]


def test_inspect_accepts_tiny_model(tiny_model_dir: Path) -> None:
    folder = inspect_model_folder(tiny_model_dir)
    assert folder.config["model_type"] == "mixtral"
    assert [path.name for path in folder.weight_files] == ["model.safetensors"]


def test_no_network_while_loading_and_generating(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[tuple[object, ...]] = []

    class NoSocket(socket.socket):
        def __init__(self, *args: object, **kwargs: object) -> None:
            attempts.append(args)
            raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket, "socket", NoSocket)
    monkeypatch.setattr(socket, "create_connection", NoSocket)
    loaded = load_model(tiny_model_dir)
    params = SamplingParams.defaults().replace(max_new_tokens=8, seed=1)
    prompt = build_prompt(loaded, "The Licensee shall", params.max_new_tokens)
    result = stream_completion(loaded, prompt, params, lambda _piece: None)
    assert result.token_ids
    assert attempts == []
