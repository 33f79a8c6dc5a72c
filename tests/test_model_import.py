"""Importing pickle checkpoints into safetensors copies, with real files and the tiny model.

Each source folder is the tiny model's configuration and tokenizer files beside a checkpoint
written with torch.save. The imported copies are loaded through kl3m_desk.model.load_model and
must give exactly the logits of the tiny model's own safetensors folder.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import safetensors
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from kl3m_desk.model import LoadedModel, load_model
from kl3m_desk.model_import import (
    IMPORT_RECORD_FILE,
    CheckpointImportError,
    ImportCancelled,
    default_target_root,
    find_pickle_checkpoint,
    import_pickle_checkpoint,
    imported_copy,
)
from tests.conftest import read_only_folder

# Token ids below 600, so they fit the fallback tokenizer's vocabulary as well as kl3m-001-32k's.
INPUT_IDS = torch.tensor([[0, 7, 42, 99, 311, 5, 250, 17, 463, 3]])
SHARD_NAMES = ("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin")


class MarkerWriter:
    """An object whose unpickling would create the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return (pathlib.Path.touch, (self.marker,))


def copy_side_files(source: Path, destination: Path) -> Path:
    """Copy every file of `source` except its safetensors weights into `destination`."""
    destination.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.startswith("model.safetensors"):
            shutil.copyfile(path, destination / path.name)
    return destination


def logits_of(loaded: LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        # The modulo keeps the ids valid for the small tokenizer used where kl3m-001-32k is absent.
        return loaded.model(INPUT_IDS % loaded.model.config.vocab_size).logits


def entries(root: Path) -> list[str]:
    """Return every name in `root`, hidden temporary folders included."""
    return sorted(path.name for path in root.iterdir()) if root.exists() else []


def write_shards(folder: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Split `state_dict` into two pickle shards and write pytorch_model.bin.index.json."""
    names = list(state_dict)
    halves = (names[: len(names) // 2], names[len(names) // 2 :])
    weight_map = {}
    for shard_name, keys in zip(SHARD_NAMES, halves, strict=True):
        torch.save({key: state_dict[key] for key in keys}, folder / shard_name)
        weight_map.update(dict.fromkeys(keys, shard_name))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index), encoding="utf-8")


@pytest.fixture(scope="module")
def model_state_dict(tiny_model_dir: Path) -> dict[str, torch.Tensor]:
    """The tiny model's state dict as `model.state_dict()` returns it after from_pretrained."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return dict(model.state_dict())


@pytest.fixture(scope="module")
def reference_logits(tiny_model: LoadedModel) -> torch.Tensor:
    """Logits of the tiny model loaded from its original safetensors folder."""
    return logits_of(tiny_model)


@pytest.fixture
def pickle_model_dir(
    tmp_path: Path, tiny_model_dir: Path, model_state_dict: dict[str, torch.Tensor]
) -> Path:
    """A model folder whose only weights are pytorch_model.bin."""
    folder = copy_side_files(tiny_model_dir, tmp_path / "kl3m-pickle")
    torch.save(model_state_dict, folder / "pytorch_model.bin")
    return folder


@pytest.fixture
def sharded_model_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A model folder with two pickle shards and their index.

    The tensors come from the safetensors file, so they carry the per-expert names
    (`experts.0.w1.weight`) that published Mixtral checkpoints use.
    """
    folder = copy_side_files(tiny_model_dir, tmp_path / "kl3m-sharded")
    write_shards(folder, load_file(tiny_model_dir / "model.safetensors"))
    return folder


def test_single_file_same_logits(pickle_model_dir: Path, reference_logits: torch.Tensor) -> None:
    imported = import_pickle_checkpoint(pickle_model_dir)
    logits = logits_of(load_model(imported.folder))
    assert torch.equal(logits, reference_logits)


def test_single_file_layout(pickle_model_dir: Path) -> None:
    imported = import_pickle_checkpoint(pickle_model_dir)
    names = entries(imported.folder)
    assert imported.folder == default_target_root() / "kl3m-pickle"
    assert imported.source == pickle_model_dir.resolve()
    assert "model.safetensors" in names
    assert "tokenizer.json" in names
    assert "config.json" in names
    assert "pytorch_model.bin" not in names


def test_safetensors_metadata(pickle_model_dir: Path) -> None:
    imported = import_pickle_checkpoint(pickle_model_dir)
    with safe_open(str(imported.folder / "model.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata == {"format": "pt"}


def test_sharded_same_logits(sharded_model_dir: Path, reference_logits: torch.Tensor) -> None:
    imported = import_pickle_checkpoint(sharded_model_dir)
    logits = logits_of(load_model(imported.folder))
    assert torch.equal(logits, reference_logits)


def test_sharded_layout(sharded_model_dir: Path) -> None:
    imported = import_pickle_checkpoint(sharded_model_dir)
    index = json.loads((imported.folder / "model.safetensors.index.json").read_text())
    shard_files = set(index["weight_map"].values())
    assert shard_files == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert (imported.folder / "model-00001-of-00002.safetensors").is_file()
    assert (imported.folder / "model-00002-of-00002.safetensors").is_file()
    assert not (imported.folder / "model.safetensors").exists()
    assert set(imported.source_sha256) == set(SHARD_NAMES)


def test_sharded_index_total_size(sharded_model_dir: Path, tiny_model_dir: Path) -> None:
    imported = import_pickle_checkpoint(sharded_model_dir)
    index = json.loads((imported.folder / "model.safetensors.index.json").read_text())
    tensors = load_file(tiny_model_dir / "model.safetensors")
    expected = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    assert index["metadata"]["total_size"] == expected


def test_sharded_progress(sharded_model_dir: Path) -> None:
    calls: list[tuple[int, int]] = []
    import_pickle_checkpoint(sharded_model_dir, progress=lambda s, t, _m: calls.append((s, t)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_legacy_format_imported(
    pickle_model_dir: Path, model_state_dict: dict[str, torch.Tensor]
) -> None:
    torch.save(
        model_state_dict,
        pickle_model_dir / "pytorch_model.bin",
        _use_new_zipfile_serialization=False,
    )
    imported = import_pickle_checkpoint(pickle_model_dir)
    converted = load_file(imported.folder / "model.safetensors")
    assert converted.keys() == model_state_dict.keys()
    for name, tensor in model_state_dict.items():
        assert torch.equal(converted[name], tensor), name


def test_shared_storage_cloned(pickle_model_dir: Path) -> None:
    weight = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    state_dict = {"embed.weight": weight, "lm_head.weight": weight, "transposed": weight.t()}
    torch.save(state_dict, pickle_model_dir / "pytorch_model.bin")
    imported = import_pickle_checkpoint(pickle_model_dir)
    converted = load_file(imported.folder / "model.safetensors")
    assert torch.equal(converted["embed.weight"], weight)
    assert torch.equal(converted["lm_head.weight"], weight)
    assert torch.equal(converted["transposed"], weight.t())
    assert converted["lm_head.weight"].dtype == torch.bfloat16


def test_tied_weights_load(
    pickle_model_dir: Path, model_state_dict: dict[str, torch.Tensor]
) -> None:
    state_dict = dict(model_state_dict)
    state_dict["lm_head.weight"] = state_dict["model.embed_tokens.weight"]
    torch.save(state_dict, pickle_model_dir / "pytorch_model.bin")
    imported = import_pickle_checkpoint(pickle_model_dir)
    model = load_model(imported.folder).model
    embedding = model.get_input_embeddings().weight
    assert torch.equal(model.lm_head.weight, embedding)


def test_malicious_pickle_rejected(pickle_model_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickling-ran"
    checkpoint = pickle_model_dir / "pytorch_model.bin"
    torch.save({"weight": torch.zeros(2), "payload": MarkerWriter(marker)}, checkpoint)
    with pytest.raises(CheckpointImportError) as raised:
        import_pickle_checkpoint(pickle_model_dir)
    assert str(checkpoint) in str(raised.value)
    assert "objects other than tensors" in str(raised.value)
    assert "weights_only" not in str(raised.value)
    assert not marker.exists()
    assert entries(default_target_root()) == []


def test_malicious_legacy_pickle_rejected(pickle_model_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickling-ran"
    checkpoint = pickle_model_dir / "pytorch_model.bin"
    torch.save({"payload": MarkerWriter(marker)}, checkpoint, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointImportError, match="objects other than tensors"):
        import_pickle_checkpoint(pickle_model_dir)
    assert not marker.exists()
    assert entries(default_target_root()) == []


def test_string_value_rejected(pickle_model_dir: Path) -> None:
    checkpoint = pickle_model_dir / "pytorch_model.bin"
    torch.save({"weight": torch.zeros(2), "note": "trained on contracts"}, checkpoint)
    with pytest.raises(CheckpointImportError) as raised:
        import_pickle_checkpoint(pickle_model_dir)
    message = str(raised.value)
    assert str(checkpoint) in message
    assert "objects other than tensors" in message
    assert "the value of note is a str" in message
    assert entries(default_target_root()) == []


def test_list_checkpoint_rejected(pickle_model_dir: Path) -> None:
    torch.save([torch.zeros(2)], pickle_model_dir / "pytorch_model.bin")
    with pytest.raises(CheckpointImportError, match="contains a list, not a state dict"):
        import_pickle_checkpoint(pickle_model_dir)


def test_damaged_checkpoint_rejected(pickle_model_dir: Path) -> None:
    checkpoint = pickle_model_dir / "pytorch_model.bin"
    checkpoint.write_bytes(checkpoint.read_bytes()[:4096])
    with pytest.raises(CheckpointImportError) as raised:
        import_pickle_checkpoint(pickle_model_dir)
    assert str(checkpoint) in str(raised.value)
    assert "damaged" in str(raised.value)
    assert entries(default_target_root()) == []


def test_missing_shard_named(sharded_model_dir: Path) -> None:
    (sharded_model_dir / SHARD_NAMES[1]).unlink()
    with pytest.raises(CheckpointImportError) as raised:
        find_pickle_checkpoint(sharded_model_dir)
    assert SHARD_NAMES[1] in str(raised.value)
    assert "missing" in str(raised.value)


def test_missing_shard_import_fails(sharded_model_dir: Path) -> None:
    (sharded_model_dir / SHARD_NAMES[1]).unlink()
    with pytest.raises(CheckpointImportError, match=SHARD_NAMES[1]):
        import_pickle_checkpoint(sharded_model_dir)
    assert entries(default_target_root()) == []


def test_shard_outside_folder_rejected(sharded_model_dir: Path) -> None:
    index_path = sharded_model_dir / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    first_tensor = next(iter(index["weight_map"]))
    index["weight_map"][first_tensor] = "../elsewhere.bin"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointImportError, match="not a file name in the folder"):
        find_pickle_checkpoint(sharded_model_dir)


def test_tensor_absent_from_shard(sharded_model_dir: Path) -> None:
    index_path = sharded_model_dir / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.extra.weight"] = SHARD_NAMES[0]
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointImportError, match=r"does not contain the tensor model\.extra"):
        import_pickle_checkpoint(sharded_model_dir)
    assert entries(default_target_root()) == []


def test_no_checkpoint_found(tiny_model_dir: Path) -> None:
    assert find_pickle_checkpoint(tiny_model_dir) == []


def test_no_checkpoint_import_fails(tiny_model_dir: Path) -> None:
    with pytest.raises(CheckpointImportError, match=r"no pytorch_model\.bin"):
        import_pickle_checkpoint(tiny_model_dir)


def test_missing_config_rejected(pickle_model_dir: Path) -> None:
    (pickle_model_dir / "config.json").unlink()
    with pytest.raises(CheckpointImportError, match=r"missing config\.json"):
        import_pickle_checkpoint(pickle_model_dir)
    assert entries(default_target_root()) == []


def test_cancel_leaves_nothing(sharded_model_dir: Path) -> None:
    cancel = threading.Event()
    with pytest.raises(ImportCancelled, match="cancelled"):
        import_pickle_checkpoint(sharded_model_dir, progress=lambda *_: cancel.set(), cancel=cancel)
    assert entries(default_target_root()) == []


def test_cancel_before_start(pickle_model_dir: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ImportCancelled):
        import_pickle_checkpoint(pickle_model_dir, cancel=cancel)
    assert entries(default_target_root()) == []


def test_read_only_root_rejected(pickle_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "read-only"
    root.mkdir()
    with read_only_folder(root), pytest.raises(CheckpointImportError) as raised:
        import_pickle_checkpoint(pickle_model_dir, target_root=root)
    assert str(root) in str(raised.value)
    assert "not permitted" in str(raised.value) or "Permission denied" in str(raised.value)


def test_root_under_file_rejected(pickle_model_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the models folder should be", encoding="utf-8")
    root = blocker / "models"
    with pytest.raises(CheckpointImportError) as raised:
        import_pickle_checkpoint(pickle_model_dir, target_root=root)
    assert str(root) in str(raised.value)
    assert "Not a directory" in str(raised.value)


def test_python_files_not_copied(pickle_model_dir: Path) -> None:
    (pickle_model_dir / "modeling_kl3m.py").write_text("raise SystemExit\n", encoding="utf-8")
    imported = import_pickle_checkpoint(pickle_model_dir)
    names = entries(imported.folder)
    assert "modeling_kl3m.py" not in names
    assert not [name for name in names if name.endswith((".py", ".bin"))]


def test_import_record_contents(pickle_model_dir: Path) -> None:
    imported = import_pickle_checkpoint(pickle_model_dir)
    record = json.loads((imported.folder / IMPORT_RECORD_FILE).read_text())
    checkpoint = pickle_model_dir / "pytorch_model.bin"
    entry = record["source_files"]["pytorch_model.bin"]
    assert record["source"] == str(pickle_model_dir.resolve())
    assert entry["size"] == checkpoint.stat().st_size
    assert entry["sha256"] == imported.source_sha256["pytorch_model.bin"]
    assert record["torch_version"] == str(torch.__version__)
    assert record["safetensors_version"] == safetensors.__version__
    assert datetime.fromisoformat(record["imported_at"]).utcoffset() is not None


def test_reimport_replaces_copy(pickle_model_dir: Path) -> None:
    first = import_pickle_checkpoint(pickle_model_dir)
    second = import_pickle_checkpoint(pickle_model_dir)
    assert second.folder == first.folder
    assert entries(default_target_root()) == ["kl3m-pickle"]


def test_same_name_other_source(
    pickle_model_dir: Path, tmp_path: Path, model_state_dict: dict[str, torch.Tensor]
) -> None:
    other = copy_side_files(pickle_model_dir, tmp_path / "elsewhere" / "kl3m-pickle")
    first = import_pickle_checkpoint(pickle_model_dir)
    second = import_pickle_checkpoint(other)
    assert first.folder.name == "kl3m-pickle"
    assert second.folder.name == "kl3m-pickle-2"
    assert imported_copy(pickle_model_dir) == first.folder
    assert imported_copy(other) == second.folder


def test_imported_copy_found(pickle_model_dir: Path) -> None:
    assert imported_copy(pickle_model_dir) is None
    imported = import_pickle_checkpoint(pickle_model_dir)
    assert imported_copy(pickle_model_dir) == imported.folder


def test_imported_copy_outdated(
    pickle_model_dir: Path, model_state_dict: dict[str, torch.Tensor]
) -> None:
    import_pickle_checkpoint(pickle_model_dir)
    changed = {name: tensor.clone() for name, tensor in model_state_dict.items()}
    changed["model.embed_tokens.weight"][0, 0] += 1.0
    torch.save(changed, pickle_model_dir / "pytorch_model.bin")
    assert imported_copy(pickle_model_dir) is None


def test_imported_copy_custom_root(pickle_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models elsewhere"
    imported = import_pickle_checkpoint(pickle_model_dir, target_root=root)
    assert imported.folder.parent == root
    assert imported_copy(pickle_model_dir, target_root=root) == imported.folder
    assert imported_copy(pickle_model_dir) is None
