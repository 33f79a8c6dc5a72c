"""Checksum manifests of model folders bundled with the frozen app.

The release build writes `kl3m-desk-manifest.json` beside the bundled model: the sha256 and size
of every file. Before the app first loads such a folder it checks every file against the manifest,
so a damaged or altered installation is reported instead of loaded. A successful check is
remembered in the user data folder, keyed by the manifest's own sha256, so later starts skip it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from kl3m_desk import paths

log = logging.getLogger(__name__)

MANIFEST_FILE = "kl3m-desk-manifest.json"
_VERIFIED_FILE = "verified-models.json"
_CHUNK = 4 * 1024 * 1024


class ManifestError(Exception):
    """A file of a model folder does not match its manifest; the message names the file."""


def sha256_of(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Return the hex sha256 of a file, calling `progress` with the bytes read so far."""
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)
    return digest.hexdigest()


def write_manifest(folder: Path, name: str) -> Path:
    """Record the model's `name` and the sha256 and size of every file in `folder`."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_FILE:
            relative = path.relative_to(folder).as_posix()
            entries[relative] = {"sha256": sha256_of(path), "size": path.stat().st_size}
    manifest = folder / MANIFEST_FILE
    data = {"name": name, "files": entries}
    manifest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return manifest


def manifest_model_name(folder: Path) -> str | None:
    """Return the model name recorded in the folder's manifest, or None."""
    try:
        name = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def verify_manifest(folder: Path, force: bool = False) -> bool:
    """Check `folder` against its manifest; returns False when it has none.

    Raises ManifestError naming the first file that is missing or differs. Unless `force` is set,
    a folder whose manifest was already verified is not read again.
    """
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        return False
    manifest_bytes = manifest_path.read_bytes()
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    if not force and manifest_sha in _verified_manifests():
        return True
    try:
        files = json.loads(manifest_bytes)["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ManifestError(
            f"{manifest_path} is not a valid manifest ({error!r}). Reinstall kl3m-desk."
        ) from error
    if not isinstance(files, dict) or not all(
        isinstance(facts, dict)
        and isinstance(facts.get("size"), int)
        and isinstance(facts.get("sha256"), str)
        for facts in files.values()
    ):
        raise ManifestError(
            f"{manifest_path} is not a valid manifest: each file needs a size and a sha256. "
            "Reinstall kl3m-desk."
        )

    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise ManifestError(f"The bundled model file {path} is missing. Reinstall kl3m-desk.")
        if path.stat().st_size != expected["size"] or sha256_of(path) != expected["sha256"]:
            raise ManifestError(
                f"The bundled model file {path} is damaged: its checksum does not match the "
                "release. Reinstall kl3m-desk."
            )
    log.info("Verified %d files of %s against %s", len(files), folder, MANIFEST_FILE)
    _remember_verified(manifest_sha)
    return True


def _verified_store() -> Path:
    return paths.data_dir() / _VERIFIED_FILE


def _verified_manifests() -> set[str]:
    from kl3m_desk.state_files import read_state_file

    data = read_state_file(_verified_store(), list, "record of verified manifests")
    return {item for item in data if isinstance(item, str)} if isinstance(data, list) else set()


def _remember_verified(manifest_sha: str) -> None:
    from kl3m_desk.settings import write_text_atomically

    known = _verified_manifests() | {manifest_sha}
    try:
        write_text_atomically(_verified_store(), json.dumps(sorted(known)) + "\n")
    except OSError as error:
        log.warning("Could not record the verified manifest in %s: %s", _verified_store(), error)
