"""Take a screenshot of the clause library manager on a real X display.

    xvfb-run -s "-screen 0 1440x900x24" python benchmarks/screenshot_library.py docs/

The window runs without a model on a temporary profile that contains two templates of the user's
own, a changed built-in template and one broken file, so the manager shows each kind of entry
and how a skipped file is reported. The user's own profile is not touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QGuiApplication, QTextCursor
from PySide6.QtWidgets import QApplication

CLAUSE = (
    "Non-Solicitation. During the Term and for twelve (12) months after it ends, the Consultant "
    "shall not solicit any employee of the Company to leave the Company's employ."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="folder for clause-library.png")
    options = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="kl3m-desk-screenshots-")) / "Données de l'étude"
    os.environ["KL3M_DESK_HOME"] = str(home)

    from kl3m_desk.clause_library import ClauseLibrary, TemplateDraft, draft_from_selection
    from kl3m_desk.settings import Settings
    from kl3m_desk.templates import TemplateField
    from kl3m_desk.ui.main_window import MainWindow

    library = ClauseLibrary.default()
    draft = draft_from_selection(CLAUSE, "Non-Solicitation", "Employment")
    text = draft.text.replace("twelve (12) months", "{period}").replace("Consultant", "{party}")
    library.create(
        TemplateDraft(
            draft.title,
            draft.category,
            "Keeps a party from hiring away the other's employees.",
            text,
            (
                TemplateField("period", "Restricted period", "text", "twelve (12) months", ()),
                TemplateField("party", "Restricted party", "text", "Consultant", ()),
            ),
        )
    )
    library.create(
        TemplateDraft(
            "Purchase Price",
            "Transactions",
            "States the price and when it is paid.",
            "Purchase Price. The Buyer shall pay {price} on {closing_date}. ",
            (
                TemplateField("price", "Purchase price", "amount", "$0.00", ()),
                TemplateField("closing_date", "Closing date", "date", "today", ()),
            ),
        )
    )
    library.rename("governing_law", "Governing Law and Venue")
    (library.user_folder / "draft indemnity.toml").write_text(
        'title = "Indemnity (draft)"\ntext = "{indemnitor} shall indemnify. "\n', encoding="utf-8"
    )
    library.reload()

    app = QApplication(sys.argv[:1])
    settings = Settings.load()
    settings.limitations_shown = True
    window = MainWindow(settings, library.library)
    window.clause_library._library = library
    window.setGeometry(QGuiApplication.primaryScreen().availableGeometry())
    window.editor.setPlainText(CLAUSE)
    window.editor.moveCursor(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
    window.show()
    options.output.mkdir(parents=True, exist_ok=True)

    def show_manager() -> None:
        dialog = window.clause_library.open_manager()
        dialog.move(150, 110)
        dialog.select("non_solicitation")

        def finish() -> None:
            path = options.output / "clause-library.png"
            # Only the dialog: without a window manager it has no frame, and against the main
            # window behind it its edges would be hard to see.
            area = dialog.frameGeometry()
            screen = QGuiApplication.primaryScreen()
            screen.grabWindow(0, area.x(), area.y(), area.width(), area.height()).save(str(path))
            print(f"Wrote {path}")
            dialog.close()
            window.close()

        QTimer.singleShot(800, finish)

    QTimer.singleShot(1500, show_manager)
    app.exec()
    return 0


if __name__ == "__main__":
    sys.exit(main())
