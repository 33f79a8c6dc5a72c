"""The models available to kl3m-desk, described without loading their weights.

Models come from four places: the one bundled with a frozen app, the ones downloaded or imported
into the user data folder (`models/`), and the folders the user chose. Each is described from its
config.json and the headers of its safetensors files, which takes milliseconds even for a model
of several GB.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from safetensors import SafetensorError, safe_open

from kl3m_desk import paths
from kl3m_desk.manifest import MANIFEST_FILE, manifest_model_name
from kl3m_desk.model import ModelLoadError, inspect_model_folder
from kl3m_desk.resources import bundled_model_dir
from kl3m_desk.settings import Settings

log = logging.getLogger(__name__)

IMPORT_RECORD_FILE = "kl3m-desk-import.json"


class ModelSource(Enum):
    """Origin of a model folder."""

    BUNDLED = "bundled with the app"
    DOWNLOADED = "downloaded"
    IMPORTED = "imported from a PyTorch pickle checkpoint"
    CHOSEN = "chosen folder"


@dataclass(frozen=True)
class ModelEntry:
    """One model folder and what the model manager shows about it."""

    folder: Path
    name: str
    source: ModelSource
    architecture: str  # for example "MixtralForCausalLM"
    parameter_count: int | None  # None when the weights could not be read
    size_bytes: int  # every file in the folder
    dtypes: tuple[str, ...]  # of the stored weights, for example ("float32",)
    license: str  # from the model card's front matter, or "unknown"
    sha256: str  # of the weights as recorded at download or import, or "not recorded"
    problem: str  # why the folder cannot be loaded, or ""

    @property
    def removable(self) -> bool:
        """True for folders kl3m-desk wrote itself, which it may delete."""
        return self.source in (ModelSource.DOWNLOADED, ModelSource.IMPORTED)


def models_dir() -> Path:
    """Return the folder that contains downloaded and imported models."""
    return paths.data_dir() / "models"


def list_models(settings: Settings) -> list[ModelEntry]:
    """Describe every available model: bundled first, then downloaded, then chosen."""
    found: list[tuple[Path, ModelSource]] = []
    bundled = bundled_model_dir()
    if bundled is not None:
        found.append((bundled, ModelSource.BUNDLED))
    if models_dir().is_dir():
        for folder in sorted(models_dir().iterdir()):
            if folder.is_dir() and not folder.name.startswith("."):
                imported = (folder / IMPORT_RECORD_FILE).is_file()
                found.append((folder, ModelSource.IMPORTED if imported else ModelSource.DOWNLOADED))
    for folder in reversed(settings.model_dirs):
        if folder.parent == models_dir() and not folder.exists():
            continue  # a download or import that was removed; not a folder the user chose
        found.append((folder, ModelSource.CHOSEN))

    entries: list[ModelEntry] = []
    seen: set[Path] = set()
    for folder, source in found:
        key = folder.resolve() if folder.exists() else folder
        if key in seen:
            continue
        seen.add(key)
        entries.append(describe_model(folder, source))
    return entries


def describe_model(folder: Path, source: ModelSource) -> ModelEntry:
    """Describe `folder` from its files; a folder that cannot be loaded gets a `problem`."""
    problem = ""
    config: dict[str, object] = {}
    weight_files: tuple[Path, ...] = ()
    try:
        inspected = inspect_model_folder(folder)
        config = inspected.config
        weight_files = inspected.weight_files
    except ModelLoadError as error:
        problem = str(error)
        config = _read_json(folder / "config.json")

    parameters, dtypes = _count_parameters(weight_files)
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures:
        architecture = str(architectures[0])
    else:
        architecture = str(config.get("model_type", "unknown"))
    return ModelEntry(
        folder=folder,
        name=manifest_model_name(folder) or folder.name,
        source=source,
        architecture=architecture,
        parameter_count=parameters,
        size_bytes=_folder_size(folder),
        dtypes=dtypes,
        license=_read_license(folder),
        sha256=_recorded_sha256(folder),
        problem=problem,
    )


def remove_model(entry: ModelEntry) -> None:
    """Delete a downloaded or imported model folder; other folders are never deleted."""
    if not entry.removable:
        raise ValueError(
            f"{entry.folder} was not downloaded or imported by kl3m-desk; "
            "remove it in your file manager instead."
        )
    root = models_dir().resolve()
    folder = entry.folder.resolve()
    if folder.parent != root:
        raise ValueError(f"{entry.folder} is not inside {root}; it was not removed.")
    shutil.rmtree(folder)
    log.info("Removed model folder %s", folder)


def format_parameters(count: int | None) -> str:
    """Return a parameter count in the usual short form, for example "520M"."""
    if count is None:
        return "unknown"
    if count >= 1e9:
        return f"{count / 1e9:.1f}B"
    return f"{round(count / 1e6)}M" if count >= 1e6 else f"{count:,}"


def format_size(size: int) -> str:
    """Return a size in bytes as KB, MB or GB (powers of 1,000, as file managers show them)."""
    if size <= 0:
        return "0 B"
    units = ("B", "KB", "MB", "GB", "TB")
    power = min(int(math.log(size, 1000)), len(units) - 1)
    return f"{size / 1000**power:.1f} {units[power]}" if power else f"{size} B"


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _count_parameters(weight_files: tuple[Path, ...]) -> tuple[int | None, tuple[str, ...]]:
    if not weight_files:
        return None, ()
    total = 0
    dtypes: set[str] = set()
    try:
        for weight_file in weight_files:
            with safe_open(str(weight_file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                    tensor_slice = handle.get_slice(name)
                    total += math.prod(tensor_slice.get_shape())
                    dtypes.add(_DTYPE_NAMES.get(tensor_slice.get_dtype(), tensor_slice.get_dtype()))
    except (SafetensorError, OSError) as error:
        log.warning("Could not read the weight headers in %s: %s", weight_files[0].parent, error)
        return None, ()
    return total, tuple(sorted(dtypes))


_DTYPE_NAMES = {
    "F32": "float32",
    "BF16": "bfloat16",
    "F16": "float16",
    "F64": "float64",
    "I64": "int64",
    "I32": "int32",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def _folder_size(folder: Path) -> int:
    try:
        return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    except OSError:
        return 0


def _read_license(folder: Path) -> str:
    """Return the `license:` of the model card's YAML front matter, or "unknown"."""
    try:
        card = (folder / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return "unknown"
    front_matter = re.match(r"---\s*\n(.*?)\n---", card, re.DOTALL)
    if front_matter:
        found = re.search(r"^license:\s*['\"]?([^'\"\n]+)", front_matter.group(1), re.MULTILINE)
        if found:
            return found.group(1).strip()
    return "unknown"


def _recorded_sha256(folder: Path) -> str:
    """Return the sha256 of the main weight file as recorded at build, download or import."""
    for record_name in (MANIFEST_FILE, IMPORT_RECORD_FILE, "kl3m-desk-download.json"):
        record = _read_json(folder / record_name)
        files = record.get("files") or record.get("source_files")
        if isinstance(files, dict):
            for name, facts in sorted(files.items()):
                if str(name).endswith((".safetensors", ".bin")) and isinstance(facts, dict):
                    return str(facts.get("sha256", "not recorded"))
    return "not recorded"
