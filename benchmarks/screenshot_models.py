"""Take screenshots of the first-run panel and the model manager on a real X display.

    xvfb-run -s "-screen 0 1440x900x24" python benchmarks/screenshot_models.py MODEL_DIR docs/

MODEL_DIR (for example the full-size random model from make_random_model.py) is linked into a
temporary profile as if it had been downloaded, and a tiny random model is added as a folder the
user chose, so both panels show real entries. The user's own profile is not touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model folder shown as a previous download")
    parser.add_argument("output", type=Path, help="folder for first-run.png and model-manager.png")
    options = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="kl3m-desk-screenshots-"))
    os.environ["KL3M_DESK_HOME"] = str(home)

    from kl3m_desk.model_catalog import models_dir
    from kl3m_desk.resources import resource_path
    from kl3m_desk.settings import Settings
    from kl3m_desk.templates import load_library
    from kl3m_desk.tiny_model import write_tiny_model
    from kl3m_desk.ui.main_window import MainWindow
    from kl3m_desk.ui.model_manager import ModelManagerDialog

    models_dir().mkdir(parents=True)
    (models_dir() / options.model.name).symlink_to(options.model.resolve())
    tiny = write_tiny_model(home / "My models" / "kl3m-tiny-test")
    settings = Settings.load()
    settings.remember_model_dir(tiny)
    settings.save()

    app = QApplication(sys.argv[:1])
    window = MainWindow(Settings.load(), load_library([resource_path("templates")]))
    window.setGeometry(QGuiApplication.primaryScreen().availableGeometry())
    window.show()
    options.output.mkdir(parents=True, exist_ok=True)

    def grab(name: str) -> None:
        path = options.output / name
        QGuiApplication.primaryScreen().grabWindow(0).save(str(path))
        print(f"Wrote {path}")

    def show_manager() -> None:
        grab("first-run.png")
        dialog = ModelManagerDialog(window.settings, None, window)
        dialog.show()
        dialog.move(120, 160)

        def finish() -> None:
            grab("model-manager.png")
            dialog.close()
            window.close()

        QTimer.singleShot(800, finish)

    QTimer.singleShot(1500, show_manager)
    app.exec()
    return 0


if __name__ == "__main__":
    sys.exit(main())
