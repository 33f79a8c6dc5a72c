"""The settings file: sampling parameters and the last model folder, kept across restarts.

Settings live in `settings.json` under the user config folder (see kl3m_desk.paths). Loading is
tolerant. A file that is empty, cut off or not a JSON object is set aside whole, and the defaults
are used. A value of the wrong type falls back to its default and a number out of range is pulled
into range, while the other values are kept. In both cases a copy of the file as it was is kept
beside it (`settings.json.invalid-<time>`), and the problem is reported through
`Settings.load_warnings`. A repaired file is written back at once, so the same problem is not
reported again on the next start. Saving writes a temporary file and renames it over the old one,
so a crash during a save never leaves a half-written file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kl3m_desk import paths
from kl3m_desk.params import PARAMETERS, STOP_AT, SamplingParams
from kl3m_desk.suggestion import SuggestionSettings

log = logging.getLogger(__name__)

SETTINGS_FILE_NAME = "settings.json"
DEVICE_SETTINGS = ("auto", "cpu", "mps")
PRECISION_SETTINGS = ("fast", "exact")
# JSON names of the types that json.loads returns, for messages.
JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "true or false"}
JSON_KINDS[type(None)] = "null"


@dataclass
class Settings:
    """Values stored in the settings file."""

    sampling: SamplingParams = field(default_factory=SamplingParams.defaults)
    last_model_dir: Path | None = None
    model_dirs: list[Path] = field(default_factory=list)  # folders the user chose, newest last
    limitations_shown: bool = False  # the model card's limitations were shown once
    device: str = "auto"  # "auto", "cpu" or "mps"
    # "fast": the fastest computation that passes the float32 comparison on this machine;
    # "exact": the float32 reference, multiplied as transformers does.
    precision: str = "fast"
    suggestions: SuggestionSettings = field(default_factory=SuggestionSettings)
    path: Path = field(default_factory=lambda: paths.config_dir() / SETTINGS_FILE_NAME)
    load_warnings: list[str] = field(default_factory=list)  # problems found by `load`

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        """Read the settings file, falling back to defaults for anything missing or invalid."""
        settings = cls() if path is None else cls(path=path)
        try:
            raw_text = settings.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return settings
        except (OSError, UnicodeDecodeError) as error:
            settings._reject_file(f"it could not be read ({error})")
            return settings

        if not raw_text.strip():
            settings._reject_file("it is empty")
            return settings
        try:
            data = json.loads(raw_text)
        except json.JSONDecodeError as error:
            settings._reject_file(f"it is not valid JSON, or was cut off ({error})")
            return settings
        if not isinstance(data, dict):
            kind = JSON_KINDS.get(type(data), type(data).__name__)
            settings._reject_file(f"it contains a JSON {kind}, not an object")
            return settings

        settings._read_values(data)
        if settings.load_warnings:
            settings._repair_file()
        return settings

    def _read_values(self, data: dict[str, Any]) -> None:
        """Take each value of `data` that is valid, warning about the others."""
        self._read_sampling(data.get("sampling", {}))
        self._read_model_dir(data.get("last_model_dir"))
        self._read_model_dirs(data.get("model_dirs", []))
        self._read_choice("device", data.get("device", "auto"), DEVICE_SETTINGS)
        if "precision" in data:
            self._read_choice("precision", data["precision"], PRECISION_SETTINGS)
        elif data.get("dtype") == "float32":  # written by versions that stored a dtype
            self.precision = "exact"
        if "limitations_shown" in data:
            if isinstance(data["limitations_shown"], bool):
                self.limitations_shown = data["limitations_shown"]
            else:
                self._warn(
                    f"The setting limitations_shown={data['limitations_shown']!r} in "
                    f"{self.path} is not true or false; false is used."
                )
        if "suggestions" in data:
            self.suggestions, problems = SuggestionSettings.from_mapping(
                data["suggestions"], str(self.path)
            )
            for problem in problems:
                self._warn(problem)

    def forget_model_dir(self, folder: Path) -> None:
        """Drop `folder` from the remembered model folders, for example after it was removed."""
        self.model_dirs = [path for path in self.model_dirs if path != folder]
        if self.last_model_dir == folder:
            self.last_model_dir = None

    def remember_model_dir(self, folder: Path) -> None:
        """Record `folder` as the last model used and among the folders the user chose."""
        self.last_model_dir = folder
        self.model_dirs = [path for path in self.model_dirs if path != folder] + [folder]

    def save(self) -> None:
        """Write the settings atomically, raising OSError when the folder is not writable."""
        data = {
            "sampling": self.sampling.to_mapping(),
            "last_model_dir": str(self.last_model_dir) if self.last_model_dir else None,
            "model_dirs": [str(path) for path in self.model_dirs],
            "limitations_shown": self.limitations_shown,
            "device": self.device,
            "precision": self.precision,
            "suggestions": self.suggestions.to_mapping(),
        }
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        write_text_atomically(self.path, text)

    def _reject_file(self, reason: str) -> None:
        backup = backup_path(self.path)
        try:
            self.path.replace(backup)
            kept = f" It was moved to {backup}."
        except OSError as error:
            log.warning(
                "Could not keep a copy of the invalid settings file %s: %s", self.path, error
            )
            kept = ""
        self._warn(
            f"The settings file {self.path} was ignored because {reason}.{kept} "
            "Defaults are used until you change a setting."
        )

    def _repair_file(self) -> None:
        """Keep a copy of the file with invalid values, then write the repaired settings."""
        backup = backup_path(self.path)
        try:
            shutil.copy2(self.path, backup)
        except OSError as error:
            log.warning("Could not keep a copy of the settings file %s: %s", self.path, error)
            self.load_warnings.append(
                f"The settings file {self.path} was left as it was, because no copy of it could "
                f"be kept ({error})."
            )
            return
        try:
            self.save()
        except OSError as error:
            log.warning("Could not write the repaired settings to %s: %s", self.path, error)
            self.load_warnings.append(
                f"The repaired settings could not be written to {self.path} ({error}); check that "
                "the folder is writable."
            )
            return
        self.load_warnings.append(
            f"A copy of the file as it was is kept as {backup}, and the file was rewritten with "
            "the values above."
        )

    def _read_sampling(self, raw: object) -> None:
        if not isinstance(raw, dict):
            self._warn(
                f"The sampling settings in {self.path} are not a JSON object; "
                "the defaults are used."
            )
            return
        values: dict[str, Any] = {}
        for spec in PARAMETERS:
            if spec.name not in raw:
                continue
            try:
                number = spec.parse(raw[spec.name])
            except ValueError as error:
                self._warn(f"{error} The setting in {self.path} was replaced by its default.")
                continue
            if number is not None and not spec.minimum <= float(raw[spec.name]) <= spec.maximum:
                message = (
                    f"{spec.label} {raw[spec.name]!r} in {self.path} is outside "
                    f"{spec.describe_range()}; {spec.format_value(number)} is used."
                )
                if spec.name == "max_new_tokens":
                    # The panel caps this again at what the loaded model's positions leave room for.
                    message += (
                        " The Sampling panel lowers it further for a model with fewer positions."
                    )
                self._warn(message)
            values[spec.name] = number
        if STOP_AT.name in raw:
            try:
                values[STOP_AT.name] = STOP_AT.parse(raw[STOP_AT.name])
            except ValueError as error:
                self._warn(f"{error} The setting in {self.path} was replaced by its default.")
        self.sampling = SamplingParams.from_mapping(values)

    def _read_model_dir(self, raw: object) -> None:
        if raw is None:
            return
        if not isinstance(raw, str) or not raw:
            self._warn(f"The last model folder in {self.path} is not a path; it was ignored.")
            return
        self.last_model_dir = Path(raw)

    def _read_model_dirs(self, raw: object) -> None:
        if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
            self._warn(
                f"The model folder list in {self.path} is not a list of paths; it was reset."
            )
            return
        self.model_dirs = [Path(item) for item in raw]

    def _read_choice(self, name: str, raw: object, choices: tuple[str, ...]) -> None:
        if raw not in choices:
            self._warn(
                f"The {name} setting {raw!r} in {self.path} is not one of {', '.join(choices)}; "
                f'"{getattr(self, name)}" is used.'
            )
            return
        setattr(self, name, raw)

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        self.load_warnings.append(message)


def backup_path(path: Path) -> Path:
    """Return a new name beside `path` for a copy of an invalid file, such as `x.invalid-<time>`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.invalid-{stamp}")
    number = 2
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.invalid-{stamp}-{number}")
        number += 1
    return candidate


def write_text_atomically(path: Path, text: str, newline: str = "\n") -> None:
    """Write `text` as UTF-8 to `path` through a temporary file in the same folder and a rename.

    `newline` is the line ending written for each "\\n". See `write_bytes_atomically`.
    """
    if newline != "\n":
        text = text.replace("\n", newline)
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, fsync and a rename.

    Readers see either the old file or the new one, never a partial write. Raises OSError (for
    example PermissionError) on failure, leaving the old file untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    temporary = Path(temporary_name)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if path.exists():
            temporary.chmod(path.stat().st_mode & 0o777)
        else:
            temporary.chmod(0o644)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(folder: Path) -> None:
    """Flush the folder's entry of a renamed file to disk, where the system allows it.

    On POSIX systems a rename is durable only once the folder itself is synced. Python cannot
    open a folder for fsync on Windows, so there the rename is left to the file system.
    """
    if os.name != "posix":
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError as error:
        log.debug("Could not open %s to sync it: %s", folder, error)
        return
    try:
        os.fsync(descriptor)
    except OSError as error:
        log.debug("Could not sync %s: %s", folder, error)
    finally:
        os.close(descriptor)
