"""Loading a local Hugging Face causal language model folder, safely and offline.

A model folder contains `config.json`, safetensors weights (`model.safetensors`, or shards listed in
`model.safetensors.index.json`) and the tokenizer files. Loading reads local files only, never runs
code shipped in the folder (`trust_remote_code=False`) and never unpickles anything: a folder whose
weights are only a PyTorch pickle checkpoint (`pytorch_model.bin`) is rejected, because unpickling
can run arbitrary code. Every problem raises ModelLoadError with a message that names the folder,
the file at fault and what to do.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from kl3m_desk.engine import Engine, WeightFormat
from kl3m_desk.manifest import ManifestError, manifest_model_name, verify_manifest
from kl3m_desk.weights import read_mixtral

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.bin", "*.pt", "*.pth", "*.ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")

# Reported through the progress callback as (step, LOAD_STEPS, message).
LOAD_STEPS = 4

ProgressCallback = Callable[[int, int, str], None]


class ModelLoadError(Exception):
    """A model folder is missing, incomplete or invalid; the message names the folder and file."""


@dataclass(frozen=True)
class ModelFolder:
    """A model folder whose files passed `inspect_model_folder`."""

    path: Path
    config: dict[str, Any]
    weight_files: tuple[Path, ...]


@dataclass
class LoadedModel:
    """A model and its tokenizer, ready for generation on `device` in `dtype`."""

    folder: Path
    name: str
    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    max_positions: int
    bos_token_id: int | None
    eos_token_ids: frozenset[int]
    suppressed_token_ids: tuple[int, ...]  # special tokens other than EOS, never sampled
    parameter_count: int
    load_seconds: float
    engine: Engine  # the forward pass generation runs, over the model's own weights
    device_reason: str = "CPU, float32: the reference precision."  # why this device and dtype

    @property
    def dtype_name(self) -> str:
        """Return the dtype without its `torch.` prefix, for example "float32"."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def precision(self) -> str:
        """Return "Exact" for the float32 reference computation and "Fast" otherwise."""
        exact = self.engine.weights == "exact" and self.dtype == torch.float32
        return "Exact" if exact else "Fast"

    def describe(self) -> str:
        """Return a one-line description for the status bar and the log."""
        return f"{self.name} · {self.precision} · {self.device.type.upper()} {self.dtype_name}"


def inspect_model_folder(folder: Path) -> ModelFolder:
    """Check that `folder` contains a loadable model without reading the weights themselves.

    Raises ModelLoadError naming the folder and the missing or invalid file.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise ModelLoadError(
            f"The model folder {folder} does not exist. Choose a folder that contains "
            f"{CONFIG_FILE}, {SAFETENSORS_FILE} and tokenizer.json."
        )
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is a file, not a model folder. Choose the folder instead.")

    config = read_config(folder)
    weight_files = _find_weight_files(folder)
    for weight_file in weight_files:
        _check_safetensors_header(folder, weight_file)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"The model folder {folder} has no tokenizer: tokenizer.json is missing. Copy the "
            "tokenizer files that were published with the model into the folder."
        )
    return ModelFolder(path=folder, config=config, weight_files=weight_files)


def read_config(folder: Path) -> dict[str, Any]:
    """Read the folder's config.json, raising ModelLoadError when it is missing or invalid."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ModelLoadError(
            f"The model folder {folder} is missing {CONFIG_FILE}. Choose the folder that contains "
            "the model's config.json, weights and tokenizer files."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(
            f"{config_path} is not a valid model configuration ({error}). "
            "Restore the file from the published model."
        ) from error
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelLoadError(
            f'{config_path} is not a valid model configuration: it has no "model_type". '
            "Restore the file from the published model."
        )
    return config


def _find_weight_files(folder: Path) -> tuple[Path, ...]:
    index_path = folder / SAFETENSORS_INDEX_FILE
    if (folder / SAFETENSORS_FILE).is_file():
        return (folder / SAFETENSORS_FILE,)

    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            shard_names = sorted(set(index["weight_map"].values()))
        except (
            OSError,
            UnicodeDecodeError,
            json.JSONDecodeError,
            KeyError,
            TypeError,
            AttributeError,
        ) as error:
            raise ModelLoadError(
                f"{index_path} is not a valid safetensors index ({error!r}). "
                "Restore the file from the published model."
            ) from error
        missing = [name for name in shard_names if not (folder / name).is_file()]
        if missing:
            raise ModelLoadError(
                f"The model folder {folder} is missing weight files listed in "
                f"{SAFETENSORS_INDEX_FILE}: {', '.join(missing)}. Copy the complete model folder."
            )
        return tuple(folder / name for name in shard_names)

    pickles = sorted({path.name for pattern in PICKLE_PATTERNS for path in folder.glob(pattern)})
    if pickles:
        raise ModelLoadError(
            f"The model folder {folder} contains only PyTorch pickle weights "
            f"({', '.join(pickles)}). "
            "kl3m-desk loads safetensors weights only, because opening a pickle file can run "
            f"arbitrary code. Use a copy of the model with {SAFETENSORS_FILE}."
        )
    raise ModelLoadError(
        f"The model folder {folder} has no weights: {SAFETENSORS_FILE} is missing. "
        "Copy the complete model folder, including its weights."
    )


def _check_safetensors_header(folder: Path, weight_file: Path) -> None:
    try:
        with safe_open(str(weight_file), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as error:
        raise ModelLoadError(
            f"The weight file {weight_file.name} in {folder} is invalid or incomplete ({error}). "
            "Copy the file again from the published model."
        ) from error


def load_model(
    folder: Path,
    progress: ProgressCallback | None = None,
    dtype: torch.dtype = torch.float32,
    weights: WeightFormat = "exact",
) -> LoadedModel:
    """Load the model and tokenizer in `folder` on the CPU in `dtype`.

    transformers converts each tensor to `dtype` as it reads it, so a bfloat16 load never holds
    a float32 copy of the weights. `weights` is the engine's format (see kl3m_desk.engine):
    "exact" with float32 is the reference computation. Runs on whatever thread calls it and
    touches no GUI; `progress` is called from that thread. Raises ModelLoadError for every
    problem with the folder or its files.
    """

    def report(step: int, message: str) -> None:
        log.info("Loading model: %s", message)
        if progress is not None:
            progress(step, LOAD_STEPS, message)

    started = time.perf_counter()
    report(0, "Checking model files")
    model_folder = inspect_model_folder(Path(folder))
    folder = model_folder.path
    try:
        if verify_manifest(folder):
            log.info("Model files in %s match their manifest", folder)
    except (ManifestError, OSError) as error:
        raise ModelLoadError(str(error)) from error

    # Imported here so that starting the window does not wait for transformers to import.
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()

    report(1, "Loading tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            folder, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ModelLoadError(
            f"The tokenizer files in {folder} could not be loaded ({error}). "
            "Restore tokenizer.json and tokenizer_config.json from the published model."
        ) from error

    report(2, "Loading weights")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        model = read_mixtral(folder, model_folder.weight_files, config, dtype)
        if model is None:
            log.info("Loading %s through transformers, which maps the weight files whole", folder)
            model = AutoModelForCausalLM.from_pretrained(
                folder,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                dtype=dtype,
            )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
        raise ModelLoadError(
            f"The model in {folder} could not be loaded ({error}). Check that {CONFIG_FILE} and "
            "the weights come from the same published model."
        ) from error
    model.eval()
    copied = _align_parameters(model)
    if copied:
        log.debug("Copied %d weight tensors into 64-byte aligned memory", copied)

    report(3, "Preparing model")
    try:
        engine = Engine(model, weights)
    except ValueError as error:
        raise ModelLoadError(
            f"The model in {folder} cannot run in kl3m-desk: {error} Choose a kl3m-002-520m "
            "folder or another Mixtral model."
        ) from error
    loaded = _describe_loaded(folder, model, tokenizer, engine, time.perf_counter() - started)
    report(LOAD_STEPS, f"Ready: {loaded.describe()}")
    log.info(
        "Loaded %s from %s: %s, %d parameters, %d positions, device %s, %s, %.1f s",
        loaded.name,
        folder,
        model.config.model_type,
        loaded.parameter_count,
        loaded.max_positions,
        loaded.device,
        loaded.dtype_name,
        loaded.load_seconds,
    )
    return loaded


# Weights mapped from a safetensors file start wherever the file's header puts them. With torch
# 2.13 on x86, the same weights mapped from two different files gave logits that differed in the
# last bit, and copying them into fresh memory (torch's CPU allocator aligns to 64 bytes) removed
# the difference. Copying the unaligned tensors makes results depend on the weights alone.
_ALIGNMENT = 64


def _align_parameters(model: Any) -> int:
    """Copy every parameter whose data is not 64-byte aligned; returns how many were copied."""
    copied = 0
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.data_ptr() % _ALIGNMENT:
                parameter.data = parameter.data.clone()
                copied += 1
    return copied


def _describe_loaded(
    folder: Path, model: Any, tokenizer: Any, engine: Engine, seconds: float
) -> LoadedModel:
    config = model.config
    max_positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    if max_positions <= 1:
        raise ModelLoadError(
            f"{folder / CONFIG_FILE} sets no usable max_position_embeddings. "
            "Restore the file from the published model."
        )

    eos = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
    if eos is None:
        eos_ids: frozenset[int] = frozenset()
    elif isinstance(eos, list):
        eos_ids = frozenset(eos)
    else:
        eos_ids = frozenset([eos])
    bos = config.bos_token_id if config.bos_token_id is not None else tokenizer.bos_token_id
    vocabulary = int(config.vocab_size)
    suppressed = tuple(
        sorted(i for i in tokenizer.all_special_ids if i not in eos_ids and 0 <= i < vocabulary)
    )
    return LoadedModel(
        folder=folder,
        name=manifest_model_name(folder) or folder.name,
        model=model,
        tokenizer=tokenizer,
        device=torch.device("cpu"),
        dtype=model.dtype,
        max_positions=max_positions,
        bos_token_id=bos,
        eos_token_ids=eos_ids,
        suppressed_token_ids=suppressed,
        parameter_count=sum(parameter.numel() for parameter in model.parameters()),
        load_seconds=seconds,
        engine=engine,
    )
