"""Location of the app's bundled resources (clause templates, icons).

The same `resource_path` serves the three ways the app runs:

- from a source checkout or an editable install: `<repository>/resources`;
- from an installed wheel: `kl3m_desk/resources` inside the package, where the wheel build
  copies it;
- from a PyInstaller bundle: `resources` under the bundle's extraction folder (`sys._MEIPASS`).
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path


class ResourceNotFoundError(FileNotFoundError):
    """A bundled resource file or folder is missing from the installation."""


@cache
def resources_root() -> Path:
    """Return the app's resources folder, raising ResourceNotFoundError if none exists."""
    package_dir = Path(__file__).resolve().parent
    candidates = []
    bundle_dir = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle_dir:
        candidates.append(Path(bundle_dir) / "resources")
    candidates.append(package_dir / "resources")
    candidates.append(package_dir.parent / "resources")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    searched = ", ".join(str(path) for path in candidates)
    raise ResourceNotFoundError(
        f"The kl3m-desk resources folder is missing (searched {searched}). Reinstall kl3m-desk."
    )


def resource_path(*parts: str) -> Path:
    """Return the path of a resource such as `resource_path("templates")`, which must exist."""
    path = resources_root().joinpath(*parts)
    if not path.exists():
        raise ResourceNotFoundError(
            f"The resource {'/'.join(parts)} is missing from {resources_root()}. "
            "Reinstall kl3m-desk."
        )
    return path


def bundled_model_dir() -> Path | None:
    """Return the model folder bundled with a frozen app, or None when there is none.

    The release build may put a model in `model/` beside `resources/`; the app uses it when the
    user has chosen no other model.
    """
    bundle_dir = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or not bundle_dir:
        return None
    folder = Path(bundle_dir) / "model"
    return folder if (folder / "config.json").is_file() else None
