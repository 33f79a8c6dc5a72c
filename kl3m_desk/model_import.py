"""Importing a PyTorch pickle checkpoint once, safely, into a safetensors model folder.

Some published model folders contain only `pytorch_model.bin` (or shards listed in
`pytorch_model.bin.index.json`), which `kl3m_desk.model.load_model` rejects because unpickling can
run arbitrary code. This module reads such a checkpoint with `torch.load(weights_only=True)`. Its
restricted unpickler (torch 2.13) builds only tensors, plain containers and primitive values, and
raises `pickle.UnpicklingError` for any other object instead of creating it. The tensors are
written unchanged (same names, dtypes and values) as safetensors into a copy of the folder under
`paths.data_dir() / "models"`, together with the configuration and tokenizer files. Python files
and the pickle files are never copied.

The copy is written into a temporary folder beside its final place and renamed at the end, so an
import that fails or is cancelled leaves nothing behind. No Qt here: the GUI runs
`import_pickle_checkpoint` on a worker thread and passes a progress callback and a cancel event.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from kl3m_desk import paths
from kl3m_desk.manifest import sha256_of
from kl3m_desk.model import (
    CONFIG_FILE,
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX_FILE,
    TOKENIZER_FILES,
    ModelLoadError,
    inspect_model_folder,
    read_config,
)

log = logging.getLogger(__name__)

PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX_FILE = "pytorch_model.bin.index.json"
IMPORT_RECORD_FILE = "kl3m-desk-import.json"
MODELS_SUBFOLDER = "models"

# Files copied next to the converted weights when the source folder has them. Python files are
# never copied, so the copy can carry no remote code.
COPIED_FILES = (
    CONFIG_FILE,
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "README.md",
    "LICENSE",
    "LICENSE.md",
    "LICENSE.txt",
)

# The tensor dtypes in the dtype table of safetensors 0.8 (`safetensors/torch.py`). save_file
# raises a bare KeyError for any other dtype, so those are rejected earlier with a message.
_SAFETENSORS_DTYPES = frozenset(
    dtype
    for dtype in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        getattr(torch, "uint64", None),
        getattr(torch, "uint32", None),
        getattr(torch, "uint16", None),
        getattr(torch, "float8_e4m3fn", None),
        getattr(torch, "float8_e5m2", None),
        getattr(torch, "float8_e4m3fnuz", None),
        getattr(torch, "float8_e5m2fnuz", None),
    )
    if dtype is not None
)

# torch.save has written a zip archive since PyTorch 1.6. Older files are a bare pickle stream.
_ZIP_SIGNATURE = b"PK\x03\x04"
_TEMPORARY_SUFFIX = ".importing"
_REPLACED_SUFFIX = ".replaced"

ProgressCallback = Callable[[int, int, str], None]


class CheckpointImportError(Exception):
    """Error importing a pickle checkpoint. Its message names the file and what to do."""


class ImportCancelled(CheckpointImportError):
    """Cancellation of an import through its cancel event. No model folder is left behind."""


@dataclass(frozen=True)
class ImportedModel:
    """A safetensors copy of a model folder whose weights were a pickle checkpoint."""

    folder: Path  # the converted copy under paths.data_dir() / "models" / <name>
    source: Path  # the original folder
    source_sha256: dict[str, str]  # sha256 of each pickle file imported, by file name


def default_target_root() -> Path:
    """Return the folder that contains imported model copies."""
    return paths.data_dir() / MODELS_SUBFOLDER


def find_pickle_checkpoint(folder: Path) -> list[Path]:
    """Return the pickle weight files of `folder`, or [] when it has none.

    That is `pytorch_model.bin`, or else the shards listed in `pytorch_model.bin.index.json`.
    Raises CheckpointImportError when the index is invalid or a shard it lists is missing.
    """
    folder = Path(folder).expanduser()
    if (folder / PICKLE_FILE).is_file():
        return [folder / PICKLE_FILE]
    if not (folder / PICKLE_INDEX_FILE).is_file():
        return []

    shard_names = sorted(set(_read_pickle_index(folder).values()))
    missing = [name for name in shard_names if not (folder / name).is_file()]
    if missing:
        raise CheckpointImportError(
            f"The checkpoint in {folder} is incomplete: the shard {missing[0]} listed in "
            f"{PICKLE_INDEX_FILE} is missing. Copy the complete model folder, including "
            f"{', '.join(missing)}."
        )
    return [folder / name for name in shard_names]


def _read_pickle_index(folder: Path) -> dict[str, str]:
    """Return the index's weight map (tensor name to shard file name), checked."""
    index_path = folder / PICKLE_INDEX_FILE
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointImportError(
            f"{index_path} is not a valid checkpoint index ({error}). "
            "Restore the file from the published model."
        ) from error

    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointImportError(
            f'{index_path} is not a valid checkpoint index: it has no "weight_map". '
            "Restore the file from the published model."
        )
    for tensor_name, shard_name in weight_map.items():
        # A shard must be a plain file name, so the index cannot point outside the folder.
        if not isinstance(shard_name, str) or Path(shard_name).name != shard_name:
            raise CheckpointImportError(
                f"{index_path} is not a valid checkpoint index: the tensor {tensor_name} is "
                f"mapped to {shard_name!r}, which is not a file name in the folder. "
                "Restore the file from the published model."
            )
        if shard_name in ("", ".", ".."):
            raise CheckpointImportError(
                f"{index_path} is not a valid checkpoint index: the tensor {tensor_name} has no "
                "shard file name. Restore the file from the published model."
            )
    return weight_map


def import_pickle_checkpoint(
    folder: Path,
    target_root: Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> ImportedModel:
    """Convert the pickle checkpoint in `folder` to a safetensors copy under `target_root`.

    `target_root` defaults to `paths.data_dir() / "models"`. The copy is named after `folder`, and
    it replaces an earlier import of the same folder. When a folder of that name contains an
    import from elsewhere, that one is kept and the new copy gets "-2", "-3" and so on appended.

    `progress(step, total, message)` is called once per shard and twice at the end, from the
    calling thread. `cancel` is checked between shards and between tensors. Raises ImportCancelled
    when it is set, and CheckpointImportError for every problem with the source or the target.
    Neither leaves a folder in `target_root`.
    """
    source = Path(folder).expanduser()
    if not source.is_dir():
        raise CheckpointImportError(
            f"The model folder {source} does not exist or is not a folder. Choose the folder "
            f"that contains {PICKLE_FILE} and config.json."
        )
    source = source.resolve()
    shards = find_pickle_checkpoint(source)
    if not shards:
        raise CheckpointImportError(
            f"The model folder {source} contains no {PICKLE_FILE} or {PICKLE_INDEX_FILE}, "
            "so there is no pickle checkpoint to import."
        )
    _check_side_files(source)
    index = None if shards[0].name == PICKLE_FILE else _read_pickle_index(source)

    root = Path(target_root) if target_root is not None else default_target_root()
    root = root.expanduser()
    total = len(shards) + 1

    def report(step: int, message: str) -> None:
        log.info("Importing %s: %s", source, message)
        if progress is not None:
            progress(step, total, message)

    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise ImportCancelled(
                f"The import of {source} was cancelled. No model was written to {root}."
            )

    log.info("Importing the pickle checkpoint in %s into %s", source, root)
    temporary = _make_temporary_folder(root, source.name)
    try:
        source_files: dict[str, dict[str, Any]] = {}
        weight_map: dict[str, str] = {}
        total_size = 0
        for number, shard in enumerate(shards, start=1):
            check_cancel()
            report(number - 1, f"Converting {shard.name} ({number} of {len(shards)})")
            source_files[shard.name] = {
                "sha256": _hash_source(shard),
                "size": shard.stat().st_size,
            }
            check_cancel()

            output_name = (
                SAFETENSORS_FILE
                if len(shards) == 1
                else f"model-{number:05d}-of-{len(shards):05d}.safetensors"
            )
            expected = None if index is None else {k for k, v in index.items() if v == shard.name}
            names, size = _convert_shard(
                shard, temporary / output_name, expected, set(weight_map), check_cancel
            )
            weight_map.update(dict.fromkeys(names, output_name))
            total_size += size

        check_cancel()
        report(len(shards), "Copying configuration and tokenizer files")
        if len(shards) > 1:
            _write_json(
                temporary / SAFETENSORS_INDEX_FILE,
                {"metadata": {"total_size": total_size}, "weight_map": weight_map},
            )
        _copy_side_files(source, temporary)
        _write_import_record(temporary, source, source_files)
        _check_converted_folder(temporary, source)

        check_cancel()
        target = _install(temporary, root, source)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise

    report(total, f"Imported {source.name} as {target.name}")
    log.info("Imported %d pickle file(s) from %s into %s", len(shards), source, target)
    return ImportedModel(
        folder=target,
        source=source,
        source_sha256={name: entry["sha256"] for name, entry in source_files.items()},
    )


def imported_copy(folder: Path, target_root: Path | None = None) -> Path | None:
    """Return the imported copy of `folder`, or None when there is none or it is outdated.

    A copy counts only if its import record names `folder` and lists the same pickle files with
    the same size and sha256 as `folder` has now, and it passes `inspect_model_folder`. Matching
    the checksums re-reads every pickle file in full, so this costs about one read of the
    checkpoint from disk (about 2 GB for 520 million float32 weights). Files whose size changed
    are not hashed.
    """
    source = Path(folder).expanduser()
    root = Path(target_root) if target_root is not None else default_target_root()
    root = root.expanduser()
    if not source.is_dir() or not root.is_dir():
        return None
    source = source.resolve()
    try:
        shards = find_pickle_checkpoint(source)
    except CheckpointImportError as error:
        log.info("No usable imported copy of %s: %s", source, error)
        return None
    if not shards:
        return None

    for candidate in sorted(root.iterdir()):
        if candidate.name.endswith((_TEMPORARY_SUFFIX, _REPLACED_SUFFIX)):
            continue
        record = _read_import_record(candidate)
        if record is None or record.get("source") != str(source):
            continue
        if not _source_matches(record, shards):
            log.info("The imported copy %s is outdated: the files in %s changed", candidate, source)
            continue
        try:
            inspect_model_folder(candidate)
        except ModelLoadError as error:
            log.warning("The imported copy %s is damaged: %s", candidate, error)
            continue
        return candidate
    return None


def _source_matches(record: dict[str, Any], shards: list[Path]) -> bool:
    recorded = record.get("source_files")
    if not isinstance(recorded, dict) or set(recorded) != {shard.name for shard in shards}:
        return False
    for shard in shards:
        entry = recorded[shard.name]
        if not isinstance(entry, dict):
            return False
        try:
            if shard.stat().st_size != entry.get("size"):
                return False
            if sha256_of(shard) != entry.get("sha256"):
                return False
        except OSError as error:
            log.warning("Could not read %s to compare it with its import: %s", shard, error)
            return False
    return True


def _check_side_files(source: Path) -> None:
    """Reject a source folder whose copy could not load, before the slow conversion starts."""
    try:
        read_config(source)
    except ModelLoadError as error:
        raise CheckpointImportError(str(error)) from error
    if not any((source / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointImportError(
            f"The model folder {source} has no tokenizer: tokenizer.json is missing. Copy the "
            "tokenizer files that were published with the model into the folder."
        )


def _hash_source(path: Path) -> str:
    try:
        return sha256_of(path)
    except OSError as error:
        raise CheckpointImportError(
            f"The checkpoint file {path} could not be read ({error}). "
            "Check that the file is readable."
        ) from error


def _convert_shard(
    shard: Path,
    destination: Path,
    expected_names: set[str] | None,
    earlier_names: set[str],
    check_cancel: Callable[[], None],
) -> tuple[list[str], int]:
    """Write the tensors of one pickle shard to `destination` and return their names and bytes."""
    state_dict = _load_state_dict(shard)
    if expected_names is not None:
        absent = sorted(expected_names - state_dict.keys())
        if absent:
            raise CheckpointImportError(
                f"The checkpoint shard {shard} does not contain the tensor {absent[0]} that "
                f"{PICKLE_INDEX_FILE} lists for it ({len(absent)} missing in all). "
                "Copy the shard again from the published model."
            )
    repeated = sorted(state_dict.keys() & earlier_names)
    if repeated:
        raise CheckpointImportError(
            f"The checkpoint shard {shard} repeats the tensor {repeated[0]} of an earlier shard. "
            f"Restore {PICKLE_INDEX_FILE} and the shards from the published model."
        )

    tensors = _prepare_tensors(state_dict, shard, check_cancel)
    size = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    try:
        save_file(tensors, str(destination), metadata={"format": "pt"})
    except (SafetensorError, OSError) as error:
        raise CheckpointImportError(
            f"Could not write {destination} ({error}). Free disk space or choose a writable "
            "folder, then import again."
        ) from error
    return list(tensors), size


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict with the restricted unpickler, which creates no objects but tensors."""
    try:
        with path.open("rb") as stream:
            is_zip = stream.read(len(_ZIP_SIGNATURE)) == _ZIP_SIGNATURE
    except OSError as error:
        raise CheckpointImportError(
            f"The checkpoint file {path} could not be read ({error}). "
            "Check that the file is readable."
        ) from error

    # torch.load(mmap=True) raises RuntimeError for the pre-1.6 format, which is not a zip archive
    # (torch 2.13, torch/serialization.py), so that format is read into memory instead.
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as error:
        log.warning("Rejected %s: %s", path, error)
        rejected = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
        if rejected is not None:
            raise CheckpointImportError(
                f"The checkpoint file {path} contains objects other than tensors (it refers to "
                f"{rejected.group(1)}), so it was not loaded: opening it could run code. "
                "Use a copy of the model with model.safetensors, or a checkpoint that contains "
                "only tensors."
            ) from None
        raise CheckpointImportError(
            f"The checkpoint file {path} contains objects other than tensors or is damaged, so "
            "it was not loaded. Use a copy of the model with model.safetensors, or copy the "
            "checkpoint again from the published model."
        ) from None
    except (RuntimeError, EOFError, ValueError, TypeError, KeyError, AttributeError) as error:
        # Examples: a truncated zip archive, an empty file, a TorchScript archive.
        log.warning("Could not load %s: %r", path, error)
        raise CheckpointImportError(
            f"The checkpoint file {path} is damaged or is not a PyTorch state dict "
            f"({type(error).__name__}), so it was not loaded. Copy it again from the published "
            "model."
        ) from None
    except OSError as error:
        raise CheckpointImportError(
            f"The checkpoint file {path} could not be read ({error}). "
            "Check that the file is readable."
        ) from error
    return _check_state_dict(loaded, path)


def _check_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, dict):
        raise CheckpointImportError(
            f"The checkpoint file {path} contains a {type(loaded).__name__}, not a state dict "
            "(a dictionary of tensors), so it was not imported. Use the model's published "
            f"{PICKLE_FILE}."
        )
    if not loaded:
        raise CheckpointImportError(
            f"The checkpoint file {path} contains no tensors. Copy it again from the published "
            "model."
        )
    for name, value in loaded.items():
        if not isinstance(name, str) or not name:
            raise CheckpointImportError(
                f"The checkpoint file {path} is not a state dict: it has the key {name!r} "
                "where a tensor name belongs. Use the model's published "
                f"{PICKLE_FILE}."
            )
        if not isinstance(value, torch.Tensor):
            raise CheckpointImportError(
                f"The checkpoint file {path} contains objects other than tensors (the value of "
                f"{name} is a {type(value).__name__}), so it was not imported. kl3m-desk imports "
                "only checkpoints whose values are all tensors."
            )
    return loaded


def _prepare_tensors(
    state_dict: dict[str, torch.Tensor], path: Path, check_cancel: Callable[[], None]
) -> dict[str, torch.Tensor]:
    """Return the tensors in the form safetensors.torch.save_file accepts, values unchanged.

    In safetensors 0.8, save_file raises ValueError for a non-contiguous tensor and RuntimeError
    for tensors whose memory overlaps, such as tied weights (`lm_head.weight` and
    `model.embed_tokens.weight` saved from one Parameter). So a tensor whose storage an earlier
    tensor already uses is cloned, and a non-contiguous one is made contiguous. Only those tensors
    are copied in memory. The rest stay views of the loaded checkpoint, which is memory-mapped
    unless it has the pre-1.6 format.
    """
    prepared: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for name, value in state_dict.items():
        check_cancel()
        tensor = value.detach()
        if tensor.layout != torch.strided or tensor.is_quantized:
            raise CheckpointImportError(
                f"The checkpoint file {path} contains the {tensor.layout} tensor {name}, which "
                "safetensors cannot store. kl3m-desk imports only dense tensors."
            )
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise CheckpointImportError(
                f"The checkpoint file {path} contains the tensor {name} of dtype {tensor.dtype}, "
                "which safetensors cannot store."
            )

        storage = tensor.untyped_storage().data_ptr()
        if storage != 0 and storage in seen_storages:
            tensor = tensor.contiguous().clone()
        elif not tensor.is_contiguous():
            tensor = tensor.contiguous()
        seen_storages.add(tensor.untyped_storage().data_ptr())
        prepared[name] = tensor
    return prepared


def _copy_side_files(source: Path, destination: Path) -> None:
    for name in COPIED_FILES:
        path = source / name
        if not path.is_file():
            continue
        try:
            shutil.copyfile(path, destination / name)
        except OSError as error:
            raise CheckpointImportError(
                f"Could not copy {path} to {destination} ({error}). Check that the file is "
                "readable and that the target folder has free space."
            ) from error


def _write_import_record(
    destination: Path, source: Path, source_files: dict[str, dict[str, Any]]
) -> None:
    record = {
        "source": str(source),
        "source_files": source_files,
        "torch_version": str(torch.__version__),
        "safetensors_version": str(safetensors.__version__),
        "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_json(destination / IMPORT_RECORD_FILE, record)


def _read_import_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / IMPORT_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise CheckpointImportError(
            f"Could not write {path} ({error}). Free disk space or choose a writable folder, "
            "then import again."
        ) from error


def _check_converted_folder(folder: Path, source: Path) -> None:
    try:
        inspect_model_folder(folder)
    except ModelLoadError as error:
        raise CheckpointImportError(
            f"The safetensors copy of {source} failed its check ({error}). Nothing was imported."
        ) from error


def _make_temporary_folder(root: Path, name: str) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=_TEMPORARY_SUFFIX, dir=root))
    except OSError as error:
        raise CheckpointImportError(
            f"Could not create the import folder in {root} ({error}). Choose a writable folder "
            "with free space, then import again."
        ) from error


def _choose_target(root: Path, source: Path) -> Path:
    """Return the folder for the copy of `source`: its name, or the first free "-N" variant.

    A folder that contains an earlier import of the same source is returned, to be replaced.
    """
    number = 1
    while True:
        name = source.name if number == 1 else f"{source.name}-{number}"
        candidate = root / name
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
        record = _read_import_record(candidate)
        if candidate.is_dir() and record is not None and record.get("source") == str(source):
            return candidate
        number += 1


def _install(temporary: Path, root: Path, source: Path) -> Path:
    """Rename the finished `temporary` folder to its final name, replacing an earlier import."""
    target = _choose_target(root, source)
    replaced: Path | None = None
    try:
        if target.exists():
            # The earlier copy is moved aside first because a folder cannot be renamed onto a
            # non-empty folder. It is deleted only once the new copy is in place.
            replaced = root / f".{target.name}.{secrets.token_hex(4)}{_REPLACED_SUFFIX}"
            target.rename(replaced)
        temporary.rename(target)
    except OSError as error:
        if replaced is not None and not target.exists():
            _restore(replaced, target)
        raise CheckpointImportError(
            f"Could not move the imported model into {target} ({error}). Choose a writable "
            "folder, then import again."
        ) from error

    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    return target


def _restore(replaced: Path, target: Path) -> None:
    try:
        replaced.rename(target)
    except OSError as error:
        log.error("Could not move the earlier import %s back to %s: %s", replaced, target, error)


def loadable_folder(
    folder: Path,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Return the folder to load for `folder`, importing a pickle checkpoint first if needed.

    A folder with safetensors weights is returned as it is. A folder with only a pickle
    checkpoint is imported once into the user data folder, and its converted copy is returned
    then and on later calls. Raises CheckpointImportError (ImportCancelled on cancel).
    """
    folder = Path(folder).expanduser()
    has_safetensors = (folder / "model.safetensors").is_file() or (
        folder / "model.safetensors.index.json"
    ).is_file()
    if has_safetensors or not folder.is_dir() or not find_pickle_checkpoint(folder):
        return folder
    if progress is not None:
        progress(0, 1, "Checking an earlier import")
    copy = imported_copy(folder)
    if copy is not None:
        log.info("Using the imported copy %s of %s", copy, folder)
        return copy
    return import_pickle_checkpoint(folder, progress=progress, cancel=cancel).folder
