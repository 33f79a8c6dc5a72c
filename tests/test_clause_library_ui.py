"""The clause library manager, the template editor and typed fill-in fields, with real widgets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from PySide6.QtCore import QDate, Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QComboBox, QDateEdit, QLineEdit, QMessageBox
from pytestqt.qtbot import QtBot

from kl3m_desk import paths
from kl3m_desk.clause_library import Origin, Resolution
from kl3m_desk.review import sidecar_path
from kl3m_desk.settings import Settings
from kl3m_desk.templates import US_STATES, ClauseTemplate, TemplateField, load_library
from kl3m_desk.ui.clause_library import ClauseLibraryDialog, ImportPackDialog, TemplateEditorDialog
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from kl3m_desk.ui.templates_panel import TemplateFieldsDialog

SPACED_HOME = "Données de l'étude"
CLAUSE = "Payment. The Buyer shall pay the Purchase Price within thirty days of Closing."


@pytest.fixture(autouse=True)
def spaced_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the profile under a folder name with accents, an apostrophe and a space."""
    home = tmp_path / SPACED_HOME
    monkeypatch.setenv(paths.HOME_VARIABLE, str(home))
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)
    return home


@pytest.fixture
def window(qtbot: QtBot) -> Iterator[MainWindow]:
    """A window without a model, showing one clause."""
    settings = Settings.load()
    settings.limitations_shown = True
    created = MainWindow(settings, load_library())
    qtbot.addWidget(created)
    created.show()
    created.editor.setPlainText(CLAUSE)
    yield created
    created.controller.shutdown()


def open_manager(window: MainWindow, select_words: str = "") -> ClauseLibraryDialog:
    cursor = window.editor.textCursor()
    if select_words:
        start = CLAUSE.index(select_words)
        cursor.setPosition(start)
        cursor.setPosition(start + len(select_words), QTextCursor.MoveMode.KeepAnchor)
    window.editor.setTextCursor(cursor)
    window.clause_library.action.trigger()
    dialog = window.clause_library.dialog
    assert dialog is not None
    assert dialog.isVisible()
    return dialog


def select_text(editor: TemplateEditorDialog, words: str) -> None:
    text = editor.text_edit.toPlainText()
    cursor = editor.text_edit.textCursor()
    cursor.setPosition(text.index(words))
    cursor.setPosition(text.index(words) + len(words), QTextCursor.MoveMode.KeepAnchor)
    editor.text_edit.setTextCursor(cursor)


def panel_titles(window: MainWindow) -> list[str]:
    return [template.title for template in window.templates_panel.templates()]


def test_action_shortcut_and_menu(window: MainWindow) -> None:
    action = window.clause_library.action

    assert action.shortcut().toString() == "Ctrl+Shift+L"
    owners = [a for a in window.findChildren(type(action)) if a.shortcut() == action.shortcut()]
    assert owners == [action]
    menus = [menu_action.menu() for menu_action in window.menuBar().actions()]
    assert any(action in menu.actions() for menu in menus if menu is not None)


def test_new_from_selection_with_field(qtbot: QtBot, window: MainWindow, spaced_home: Path) -> None:
    dialog = open_manager(window, "The Buyer shall pay the Purchase Price within thirty days")
    assert dialog.new_from_selection_action.isEnabled()

    dialog.new_from_selection_action.trigger()
    editor = dialog.child_dialog
    assert isinstance(editor, TemplateEditorDialog)
    qtbot.keyClicks(editor.title_edit, "Payment Timing")
    editor.category_box.setCurrentText("Payments")
    select_text(editor, "thirty")
    editor.make_field_action.trigger()
    assert editor.field_names() == ["thirty"]
    qtbot.mouseClick(editor.save_button, Qt.MouseButton.LeftButton)

    assert not editor.isVisible()
    saved = spaced_home / "data" / "templates" / "payment_timing.toml"
    assert saved.exists()
    assert "Payment Timing" in panel_titles(window)
    assert dialog.current_template() is not None
    assert dialog.current_template().fill({"thirty": "sixty"}).endswith("within sixty days")
    assert "Created" in dialog.status_label.text()


def test_renamed_field_renames_placeholder(qtbot: QtBot, window: MainWindow) -> None:
    window.editor.setPlainText("Delivery is due on March 1, 2027, not {later}. ")
    window.editor.selectAll()
    window.clause_library.action.trigger()
    dialog = window.clause_library.dialog
    assert dialog is not None
    dialog.new_from_selection_action.trigger()
    editor = dialog.child_dialog
    assert isinstance(editor, TemplateEditorDialog)
    qtbot.keyClicks(editor.title_edit, "Delivery")
    select_text(editor, "March 1, 2027")
    editor.make_field_action.trigger()
    (old_name,) = editor.field_names()
    name_item = editor.fields_table.item(0, 0)
    assert name_item is not None

    name_item.setText("delivery_date")

    text = editor.text_edit.toPlainText()
    assert "{delivery_date}" in text
    assert "{" + old_name + "}" not in text
    assert "{{later}}" in text  # literal braces are not placeholders
    qtbot.mouseClick(editor.save_button, Qt.MouseButton.LeftButton)
    assert not editor.isVisible()


def test_editor_shows_invalid_template(qtbot: QtBot, window: MainWindow) -> None:
    dialog = open_manager(window)
    dialog.new_action.trigger()
    editor = dialog.child_dialog
    assert isinstance(editor, TemplateEditorDialog)
    qtbot.keyClicks(editor.title_edit, "Broken")
    editor.text_edit.setPlainText("{who} shall sign. ")

    qtbot.mouseClick(editor.save_button, Qt.MouseButton.LeftButton)

    assert editor.isVisible()
    assert 'no field named "who"' in editor.error_label.text()
    assert "in the Fields table" in editor.error_label.text()
    editor.add_field_action.trigger()
    name_item = editor.fields_table.item(0, 0)
    assert name_item is not None
    name_item.setText("who")
    qtbot.mouseClick(editor.save_button, Qt.MouseButton.LeftButton)
    assert not editor.isVisible()
    assert "Broken" in panel_titles(window)


def test_rename_and_delete_builtin_override(qtbot: QtBot, window: MainWindow) -> None:
    dialog = open_manager(window)
    dialog.select("governing_law")
    assert not dialog.delete_action.isEnabled()

    dialog.rename_action.trigger()
    rename = dialog.child_dialog
    assert rename is not None
    rename.findChild(QLineEdit).setText("Choice of Law")
    rename.accept()

    assert "Choice of Law" in panel_titles(window)
    assert "Governing Law" not in panel_titles(window)
    template = dialog.current_template()
    assert template is not None
    assert dialog.library.origin(template) is Origin.OVERRIDE
    assert dialog.delete_action.isEnabled()

    dialog.delete_action.trigger()
    box = dialog.child_dialog
    assert isinstance(box, QMessageBox)
    assert "built-in template comes back" in box.text()
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)

    assert "Governing Law" in panel_titles(window)
    assert "Restored" in dialog.status_label.text()


def test_search_filters_by_text(window: MainWindow) -> None:
    dialog = open_manager(window)
    everything = len(dialog.shown_templates())

    dialog.search_box.setText("CONFLICT-OF-LAWS")

    assert [t.id for t in dialog.shown_templates()] == ["governing_law"]
    dialog.search_box.clear()
    assert len(dialog.shown_templates()) == everything


def test_export_import_pack_conflict(qtbot: QtBot, window: MainWindow, spaced_home: Path) -> None:
    dialog = open_manager(window)
    dialog.select("notices")
    pack = spaced_home / "Partagé" / "clauses de l'équipe.kl3mpack.toml"
    assert dialog.export_pack_to(pack)
    text = pack.read_text(encoding="utf-8").replace('title = "Notices"', 'title = "Notices (firm)"')
    pack.write_text(text, encoding="utf-8")

    importer = dialog.import_pack_from(pack)

    assert isinstance(importer, ImportPackDialog)
    status = importer.table.item(0, 1)
    assert status is not None
    assert 'Would overwrite "Notices"' in status.text()
    box = importer.resolution_boxes["notices"]
    box.setCurrentIndex(box.findData(Resolution.KEEP_BOTH))
    qtbot.mouseClick(importer.import_button, Qt.MouseButton.LeftButton)

    titles = panel_titles(window)
    assert "Notices" in titles
    assert "Notices (firm) (2)" in titles
    assert "Added as a copy" in dialog.status_label.text()


def test_import_invalid_pack_reported(window: MainWindow, tmp_path: Path) -> None:
    dialog = open_manager(window)
    pack = tmp_path / "not a pack.kl3mpack.toml"
    pack.write_text("title = [", encoding="utf-8")

    assert dialog.import_pack_from(pack) is None

    assert "not valid TOML" in dialog.status_label.text()
    assert str(pack) in dialog.status_label.text()


def typed_template() -> ClauseTemplate:
    return ClauseTemplate(
        id="closing",
        title="Closing",
        category="Transactions",
        description="",
        text="On {closing_date}, {price} is due under the laws of {state}. ",
        fields=(
            TemplateField("closing_date", "Closing date", "date", "2027-01-05", ()),
            TemplateField("price", "Purchase price", "amount", "$0.00", ()),
            TemplateField("state", "Governing state", "choice", "Delaware", US_STATES),
        ),
        source=Path("closing.toml"),
    )


def test_fields_dialog_typed_inputs(qtbot: QtBot) -> None:
    dialog = TemplateFieldsDialog(typed_template(), {"state": "Texas"})
    qtbot.addWidget(dialog)
    date_input = dialog.inputs["closing_date"]
    amount_input = dialog.inputs["price"]
    state_input = dialog.inputs["state"]
    assert isinstance(date_input, QDateEdit)
    assert isinstance(amount_input, QLineEdit)
    assert isinstance(state_input, QComboBox)
    assert date_input.date() == QDate(2027, 1, 5)
    assert state_input.currentText() == "Texas"

    date_input.setDate(QDate(2027, 3, 9))
    amount_input.setText("1,250,00")
    dialog.accept()

    assert not dialog.error_label.isHidden()
    assert '"Purchase price" (price)' in dialog.error_label.text()
    assert '"1,250,00"' in dialog.error_label.text()

    amount_input.setText("$1,250,000")
    dialog.accept()
    assert dialog.filled_text == "On March 9, 2027, $1,250,000.00 is due under the laws of Texas. "
    assert dialog.values()["closing_date"] == "2027-03-09"


def test_fields_dialog_today_default(qtbot: QtBot) -> None:
    template = typed_template()
    today_field = TemplateField("closing_date", "Closing date", "date", "today", ())
    dialog = TemplateFieldsDialog(
        ClauseTemplate(**{**template.__dict__, "fields": (today_field, *template.fields[1:])}), {}
    )
    qtbot.addWidget(dialog)
    date_input = dialog.inputs["closing_date"]
    assert isinstance(date_input, QDateEdit)

    assert date_input.date().toPython() == date.today()


def test_field_values_survive_save_and_reopen(window: MainWindow, spaced_home: Path) -> None:
    document = spaced_home / "Dossiers clients" / "contrat signé.txt"
    document.parent.mkdir(parents=True)
    window.review.field_values.update({"state": "Texas", "company": "Acme Café LLC"})

    assert window.save_to(document)
    assert sidecar_path(document).exists()
    window.new_document()
    assert window.review.field_values == {}
    assert window.open_document(document)

    assert window.review.field_values == {"state": "Texas", "company": "Acme Café LLC"}
    governing_law = next(t for t in window.templates_panel.templates() if t.id == "governing_law")
    fields_dialog = TemplateFieldsDialog(governing_law, window.review.field_values, window)
    state_input = fields_dialog.inputs["state"]
    assert isinstance(state_input, QComboBox)
    assert state_input.currentText() == "Texas"
    fields_dialog.deleteLater()
