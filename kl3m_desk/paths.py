"""Per-user folders for settings, logs and data.

The folders come from platformdirs (for example `~/Library/Application Support/kl3m-desk` on macOS
and `%LOCALAPPDATA%\\kl3m-desk` on Windows). Setting `KL3M_DESK_HOME` puts all three under one
folder instead; tests use it so they never touch the real profile.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from kl3m_desk import APP_NAME

HOME_VARIABLE = "KL3M_DESK_HOME"


def _override(subfolder: str) -> Path | None:
    home = os.environ.get(HOME_VARIABLE)
    return Path(home) / subfolder if home else None


def config_dir() -> Path:
    """Return the folder for settings.json."""
    return _override("config") or Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def log_dir() -> Path:
    """Return the folder for the rotating log file."""
    return _override("logs") or Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """Return the folder for user data such as the user's own clause templates."""
    return _override("data") or Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
