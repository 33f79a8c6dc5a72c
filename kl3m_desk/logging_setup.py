"""Logging to a rotating file in the user log folder, and the start-up record of versions."""

from __future__ import annotations

import logging
import logging.handlers
import platform
import sys
from importlib import metadata
from pathlib import Path

from kl3m_desk import __version__, paths

LOG_FILE_NAME = "kl3m-desk.log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"


def configure_logging(debug: bool = False, console: bool = False) -> Path | None:
    """Send the package's log records to the rotating log file and return its path.

    `debug` lowers the level from INFO to DEBUG. `console` also writes to standard error (the
    frozen Windows app has none). Returns None when the log folder is not writable, in which case
    records go to standard error only.
    """
    level = logging.DEBUG if debug else logging.INFO
    root = logging.getLogger()
    root.setLevel(level)
    formatter = logging.Formatter(LOG_FORMAT)
    log_path: Path | None = paths.log_dir() / LOG_FILE_NAME
    try:
        assert log_path is not None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            log_path, maxBytes=2_000_000, backupCount=3, encoding="utf-8"
        )
    except OSError as error:
        log_path = None
        console = True
        print(
            f"kl3m-desk: cannot write the log file ({error}); logging to standard error.",
            file=sys.stderr,
        )
    else:
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    if console and sys.stderr is not None:
        stream_handler = logging.StreamHandler()
        stream_handler.setFormatter(formatter)
        root.addHandler(stream_handler)
    return log_path


def log_startup() -> None:
    """Log the versions of kl3m-desk and its main libraries, and the platform."""
    log = logging.getLogger("kl3m_desk")
    versions = []
    for distribution in ("torch", "transformers", "tokenizers", "PySide6-Essentials"):
        try:
            versions.append(f"{distribution} {metadata.version(distribution)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{distribution} not installed")
    log.info(
        "kl3m-desk %s, Python %s, %s", __version__, platform.python_version(), ", ".join(versions)
    )
    log.info(
        "Platform: %s (%s), frozen: %s",
        platform.platform(),
        platform.machine(),
        getattr(sys, "frozen", False),
    )
