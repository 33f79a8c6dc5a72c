"""Reading the JSON files the app keeps for itself, such as caches, without trusting them.

A state file that is empty, cut off, not JSON or of the wrong top-level type is moved aside to
`<name>.invalid-<time>` beside it, where it can still be inspected, and a warning names both
files. The caller then starts over as if the file were missing, so a damaged cache never stops
the app.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kl3m_desk.settings import backup_path

log = logging.getLogger(__name__)


def read_state_file(path: Path, expected: type, description: str) -> object | None:
    """Return the JSON value in `path`, or None when the file is missing or invalid.

    `expected` is the type the top-level value must have (dict or list), and `description`
    names the file in the warning, for example "sha256 cache".
    """
    try:
        raw_text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        log.warning("Ignoring the unreadable %s %s: %s", description, path, error)
        return None

    if not raw_text.strip():
        problem = "it is empty"
    else:
        try:
            data = json.loads(raw_text)
        except json.JSONDecodeError as error:
            problem = f"it is not valid JSON, or was cut off ({error})"
        else:
            if isinstance(data, expected):
                return data
            problem = f"it does not contain a JSON {'object' if expected is dict else 'array'}"

    backup = backup_path(path)
    try:
        path.replace(backup)
    except OSError as error:
        log.warning(
            "The %s %s was ignored because %s, and it could not be moved aside: %s",
            description,
            path,
            problem,
            error,
        )
        return None
    log.warning(
        "The %s %s was ignored because %s. It was moved to %s, and a new one will be written.",
        description,
        path,
        problem,
        backup,
    )
    return None
