"""Take a screenshot of the recovery prompt with two unsaved documents, on a real X display.

    xvfb-run -s "-screen 0 1440x900x24" python benchmarks/screenshot_recovery.py docs/recovery.png

The script writes, in a temporary profile, the journals that a killed kl3m-desk leaves behind: one
for a saved agreement with unsaved changes and one for an untitled draft. Then it starts the app
through its normal start-up (`run_gui`), which finds the journals and shows the prompt. The dialog
is grabbed once the prompt is up, Not Now is pressed, and the app quits. The user's own profile
is not touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

# Milliseconds to let the prompt appear and repaint before the screen is grabbed.
SETTLE_MS = 1500

AGREEMENT = (
    "SUPPLY AGREEMENT\n\n"
    "This Supply Agreement is entered into by Northwind Components, Inc., a Delaware "
    "corporation, and Harbor Freightworks LLC, a Texas limited liability company.\n\n"
    "1. Supply. The Supplier shall manufacture and deliver the Products in accordance with each "
    "Purchase Order accepted under this Agreement.\n"
)
DRAFT = (
    "MUTUAL NONDISCLOSURE AGREEMENT\n\n"
    "1. Confidential Information. Each party may disclose information that is marked or "
    "identified as confidential at the time of disclosure.\n"
)


def write_journals(home: Path) -> None:
    """Write the journals of two documents of an instance that was killed."""
    from kl3m_desk.journal import Journal, file_saved_at, precise_timestamp, write_journal

    folder = home / "Client Matters" / "Northwind"
    folder.mkdir(parents=True)
    agreement = folder / "Supply Agreement.txt"
    agreement.write_text(AGREEMENT, encoding="utf-8")
    yesterday = time.time() - 20 * 3600
    os.utime(agreement, (yesterday, yesterday))
    write_journal(
        Journal(
            journal_id="supply-agreement",
            text=AGREEMENT + "\n2. Price. The prices are those of Schedule A.\n",
            file_path=agreement,
            last_saved=file_saved_at(agreement),
            journaled_at=precise_timestamp(),
            instance_id="killed-instance",
        )
    )
    write_journal(
        Journal(
            journal_id="untitled-draft",
            text=DRAFT,
            file_path=None,
            journaled_at=precise_timestamp(),
            instance_id="killed-instance",
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "output", type=Path, help="PNG file to write, for example docs/recovery.png"
    )
    options = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="kl3m-desk-screenshots-"))
    os.environ["KL3M_DESK_HOME"] = str(home)
    write_journals(home)

    from kl3m_desk.ui.app import run_gui
    from kl3m_desk.ui.recovery import RecoveryDialog

    app = QApplication(sys.argv[:1])  # run_gui uses this instance
    shots: list[Path] = []

    def grab_and_quit() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, RecoveryDialog):
            print("The recovery prompt did not appear.", file=sys.stderr)
            QApplication.exit(1)
            return
        options.output.parent.mkdir(parents=True, exist_ok=True)
        # Only the dialog: without a window manager it has no frame, and against the main
        # window behind it its edges would be hard to see.
        area = dialog.frameGeometry()
        screen = QGuiApplication.primaryScreen()
        image = screen.grabWindow(0, area.x(), area.y(), area.width(), area.height())
        image.save(str(options.output))
        shots.append(options.output)
        print(f"Wrote {options.output}")
        dialog.not_now_button.click()
        QTimer.singleShot(200, QApplication.closeAllWindows)

    def fill_screen() -> None:
        # Under Xvfb there is no window manager to place windows, so the window is sized here
        # and the prompt centred over it.
        dialog = QApplication.activeModalWidget()
        if dialog is None or dialog.parentWidget() is None:
            return
        window = dialog.parentWidget()
        window.setGeometry(QGuiApplication.primaryScreen().availableGeometry())
        dialog.move(window.geometry().center() - dialog.rect().center())

    QTimer.singleShot(SETTLE_MS // 2, fill_screen)
    QTimer.singleShot(SETTLE_MS, grab_and_quit)
    status = run_gui(None, None, None)
    app.processEvents()
    return status if shots else 1


if __name__ == "__main__":
    sys.exit(main())
