"""The sha256 of a model's weight files, for records that identify the weights behind a text.

A weight file's sha256 comes from the first of these that has it:

1. the folder's checksum manifest (`kl3m-desk-manifest.json`, written for the bundled model),
2. the folder's download record (`kl3m-desk-download.json`, checked when the download ended),
3. a cache in the user data folder (`weight-sha256.json`), keyed by the file's resolved path,
   size and modification time,
4. reading the whole file, after which the result goes into that cache.

A recorded sha256 is used only while the file still has its recorded size. The cache makes the
read happen once per file version, so a 2 GB model is not hashed on every load. `WeightHasher`
computes fingerprints on background threads, so loading a model and generating do not wait for a
read. Only saving or exporting records waits for a read that is still running.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kl3m_desk import paths
from kl3m_desk.download import RECORD_FILE as DOWNLOAD_RECORD_FILE
from kl3m_desk.manifest import MANIFEST_FILE, sha256_of
from kl3m_desk.model import ModelLoadError, inspect_model_folder
from kl3m_desk.settings import write_text_atomically
from kl3m_desk.state_files import read_state_file

log = logging.getLogger(__name__)

CACHE_FILE = "weight-sha256.json"

# Values of WeightFileHash.source
FROM_MANIFEST = "manifest"
FROM_DOWNLOAD_RECORD = "download record"
FROM_CACHE = "computed earlier"
COMPUTED = "computed"


class FingerprintCancelled(Exception):
    """Hashing stopped because the app is closing."""


@dataclass(frozen=True)
class WeightFileHash:
    """The sha256 of one weight file and where the value came from."""

    name: str  # path relative to the model folder
    size: int  # bytes
    sha256: str
    source: str  # FROM_MANIFEST, FROM_DOWNLOAD_RECORD, FROM_CACHE or COMPUTED


@dataclass(frozen=True)
class WeightFingerprint:
    """The sha256 of every weight file of one model folder, in the order the loader reads them."""

    folder: Path
    files: tuple[WeightFileHash, ...]

    @property
    def sha256(self) -> str:
        """Return one sha256 for the weights.

        For a single weight file it is that file's sha256, so it matches `sha256sum
        model.safetensors` and the model card. For shards it is the sha256 of the listing that
        `sha256sum` prints for them in this order ("<sha256>  <name>\\n" per file).
        """
        if len(self.files) == 1:
            return self.files[0].sha256
        listing = "".join(f"{entry.sha256}  {entry.name}\n" for entry in self.files)
        return hashlib.sha256(listing.encode("utf-8")).hexdigest()

    @property
    def source(self) -> str:
        """Return where the sha256 values came from, for example "manifest"."""
        return ", ".join(dict.fromkeys(entry.source for entry in self.files))


def fingerprint_weights(folder: Path, cancel: threading.Event | None = None) -> WeightFingerprint:
    """Return the sha256 of every weight file in `folder`, reading a file only when needed.

    Raises ModelLoadError when the folder has no loadable weights, OSError when a file cannot
    be read and FingerprintCancelled when `cancel` is set during a read.
    """
    folder = Path(folder)
    weight_files = inspect_model_folder(folder).weight_files
    recorded = _recorded_hashes(folder)
    cache = _read_cache()
    cache_changed = False
    entries: list[WeightFileHash] = []
    for path in weight_files:
        name = path.relative_to(folder).as_posix()
        status = path.stat()
        facts = recorded.get(name)
        if facts is not None and facts[1] == status.st_size:
            entries.append(WeightFileHash(name, status.st_size, facts[0], facts[2]))
            continue

        key = str(path.resolve())
        cached = cache.get(key)
        if (
            isinstance(cached, dict)
            and cached.get("size") == status.st_size
            and cached.get("mtime_ns") == status.st_mtime_ns
            and isinstance(cached.get("sha256"), str)
        ):
            entries.append(WeightFileHash(name, status.st_size, cached["sha256"], FROM_CACHE))
            continue

        log.info("Computing the sha256 of %s (%d bytes)", path, status.st_size)
        digest = sha256_of(path, progress=_cancel_check(cancel))
        cache[key] = {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "sha256": digest}
        cache_changed = True
        entries.append(WeightFileHash(name, status.st_size, digest, COMPUTED))
    if cache_changed:
        _write_cache(cache)
    return WeightFingerprint(folder=folder, files=tuple(entries))


def _cancel_check(cancel: threading.Event | None) -> Any:
    def check(_done: int) -> None:
        if cancel is not None and cancel.is_set():
            raise FingerprintCancelled("The sha256 computation was cancelled.")

    return check


def _recorded_hashes(folder: Path) -> dict[str, tuple[str, int, str]]:
    """Return sha256, size and source per file name from the manifest and download record."""
    found: dict[str, tuple[str, int, str]] = {}
    # The manifest comes last so that its values win over the download record's.
    for record_name, source in (
        (DOWNLOAD_RECORD_FILE, FROM_DOWNLOAD_RECORD),
        (MANIFEST_FILE, FROM_MANIFEST),
    ):
        try:
            data = json.loads((folder / record_name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as error:
            log.warning("Ignoring the unreadable %s in %s: %s", record_name, folder, error)
            continue
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict):
            continue
        for name, facts in files.items():
            if not isinstance(facts, dict):
                continue
            sha256, size = facts.get("sha256"), facts.get("size")
            if isinstance(sha256, str) and isinstance(size, int):
                found[str(name)] = (sha256, size, source)
    return found


def _cache_path() -> Path:
    return paths.data_dir() / CACHE_FILE


def _read_cache() -> dict[str, Any]:
    data = read_state_file(_cache_path(), dict, "sha256 cache")
    return data if isinstance(data, dict) else {}


def _write_cache(cache: dict[str, Any]) -> None:
    try:
        write_text_atomically(_cache_path(), json.dumps(cache, indent=2, sort_keys=True) + "\n")
    except OSError as error:
        log.warning("Could not write the sha256 cache %s: %s", _cache_path(), error)


class WeightHasher:
    """Computes weight fingerprints on background threads, once per model folder.

    Call `request` when a model is ready and `fingerprint` when a record needs the value. The
    threads are daemon threads and `shutdown` stops a running read within one 4 MB chunk, so
    closing the app does not wait for a hash.
    """

    def __init__(self) -> None:
        self._futures: dict[Path, Future[WeightFingerprint]] = {}
        self._cancel = threading.Event()

    def request(self, folder: Path) -> None:
        """Start computing the fingerprint of `folder` unless it is known or under way."""
        key = Path(folder).resolve()
        if key in self._futures or self._cancel.is_set():
            return
        future: Future[WeightFingerprint] = Future()
        self._futures[key] = future

        def run() -> None:
            try:
                future.set_result(fingerprint_weights(Path(folder), self._cancel))
            except FingerprintCancelled as error:
                future.set_exception(error)
            except (ModelLoadError, OSError) as error:
                log.warning("Could not compute the sha256 of the weights in %s: %s", folder, error)
                future.set_exception(error)
            except Exception as error:  # settled, so a `fingerprint` call without a timeout returns
                log.exception("Computing the sha256 of the weights in %s failed", folder)
                future.set_exception(error)

        threading.Thread(target=run, name="weight-sha256", daemon=True).start()

    def fingerprint(self, folder: Path, timeout: float | None = 0) -> WeightFingerprint | None:
        """Return the fingerprint of `folder`, waiting up to `timeout` seconds (None: no limit).

        Returns None when it was never requested, is still being computed after `timeout`, or
        failed. A failure was logged when it happened.
        """
        future = self._futures.get(Path(folder).resolve())
        if future is None:
            return None
        try:
            return future.result(timeout=timeout)
        except FutureTimeoutError:
            return None
        except Exception:  # the thread logged the failure when it happened
            return None

    def shutdown(self) -> None:
        """Stop running reads and ignore later requests."""
        self._cancel.set()
