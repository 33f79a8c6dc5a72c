"""The clause library manager: the user's templates, the template editor and template packs.

Sub-dialogs open window-modal with `open()` and report through their `finished` signal, so the
manager never blocks in a nested event loop, and tests drive them like a user.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kl3m_desk.clause_library import (
    PACK_SUFFIX,
    ClauseLibrary,
    LibraryError,
    Origin,
    PackEntry,
    Resolution,
    TemplateDraft,
    draft_from_selection,
    field_name_for,
    make_field,
)
from kl3m_desk.templates import (
    CHOICE_KIND,
    DATE_KIND,
    FIELD_KINDS,
    TODAY,
    UNDECLARED_FIELD_ADVICE,
    US_STATES,
    ClauseTemplate,
    TemplateError,
    TemplateField,
)
from kl3m_desk.ui.editor import DraftEditor, document_text, text_before, to_plain
from kl3m_desk.ui.templates_panel import TemplatesPanel

log = logging.getLogger(__name__)

PACK_FILTER = f"Template packs (*{PACK_SUFFIX});;TOML files (*.toml);;All files (*)"
_TEMPLATE_ROLE = Qt.ItemDataRole.UserRole
# The text of the choices cell that selects the 50 states and the District of Columbia.
_US_STATES_CELL = "us_states"
_FIELD_COLUMNS = ("Name", "Label", "Kind", "Default", "Choices")
_NAME, _LABEL, _KIND, _DEFAULT, _CHOICES = range(len(_FIELD_COLUMNS))
# The field name a name cell held before its latest edit.
_PREVIOUS_NAME_ROLE = Qt.ItemDataRole.UserRole
_ERROR_STYLE = "color: #b00020;"


def _shortcut_tip(tip: str, action: QAction) -> str:
    return f"{tip} ({action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})"


def _button_for(action: QAction, accessible_name: str) -> QPushButton:
    """Return a button that triggers `action` and follows its enabled state."""
    button = QPushButton(action.text())
    button.setAccessibleName(accessible_name)
    button.setToolTip(action.toolTip())
    button.setEnabled(action.isEnabled())
    button.clicked.connect(action.trigger)
    action.enabledChanged.connect(button.setEnabled)
    return button


class TemplateEditorDialog(QDialog):
    """Edits a template draft: title, category, description, text and fields.

    `save` stores the draft and raises TemplateError or LibraryError with the reason when it
    cannot, and the dialog then shows the reason and stays open.
    """

    def __init__(
        self,
        draft: TemplateDraft,
        categories: list[str],
        save: Callable[[TemplateDraft], ClauseTemplate],
        parent: QWidget | None = None,
        heading: str = "Edit clause template",
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(heading)
        self._save = save
        self.saved: ClauseTemplate | None = None

        self.title_edit = QLineEdit(draft.title)
        self.title_edit.setAccessibleName("Template title")
        self.category_box = QComboBox()
        self.category_box.setEditable(True)
        self.category_box.addItems(categories)
        self.category_box.setCurrentText(draft.category or "Other")
        self.category_box.setAccessibleName("Template category")
        self.description_edit = QLineEdit(draft.description)
        self.description_edit.setAccessibleName("Template description")
        self.text_edit = QPlainTextEdit(draft.text)
        self.text_edit.setAccessibleName("Template text")
        self.text_edit.setToolTip(
            "Write a field as {name}. Write a literal brace as {{ or }}. "
            "Select words and press Ctrl+Shift+F to turn them into a field."
        )
        self.fields_table = QTableWidget(0, len(_FIELD_COLUMNS))
        self.fields_table.setHorizontalHeaderLabels(list(_FIELD_COLUMNS))
        self.fields_table.setAccessibleName("Template fields")
        self.fields_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        for field in draft.fields:
            self.add_field_row(field)
        self.fields_table.itemChanged.connect(self._field_item_changed)

        self.make_field_action = self._action(
            "Make &Field from Selected Words",
            self.make_field_from_selection,
            "Ctrl+Shift+F",
            "Replace the words selected in the text with a new field",
        )
        self.add_field_action = self._action(
            "&Add Field", self.add_empty_field, "Ctrl+Shift+A", "Add an empty field row"
        )
        self.remove_field_action = self._action(
            "&Remove Field", self.remove_current_field, "Ctrl+Shift+D", "Remove the selected field"
        )
        field_buttons = QHBoxLayout()
        for action, name in (
            (self.make_field_action, "Make field from selected words"),
            (self.add_field_action, "Add field"),
            (self.remove_field_action, "Remove field"),
        ):
            field_buttons.addWidget(_button_for(action, name))
        field_buttons.addStretch(1)

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setVisible(False)
        self.error_label.setAccessibleName("Template error")

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.save_button = buttons.button(QDialogButtonBox.StandardButton.Save)
        self.save_button.setAccessibleName("Save template")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow("&Title:", self.title_edit)
        form.addRow("&Category:", self.category_box)
        form.addRow("&Description:", self.description_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        text_label = QLabel("Te&xt ({name} is a field, {{ and }} are literal braces):")
        text_label.setBuddy(self.text_edit)
        layout.addWidget(text_label)
        layout.addWidget(self.text_edit, 2)
        layout.addWidget(QLabel("Fields:"))
        layout.addWidget(self.fields_table, 1)
        layout.addLayout(field_buttons)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)
        self.resize(760, 620)

    def _action(self, text: str, slot: Callable[[], object], shortcut: str, tip: str) -> QAction:
        action = QAction(text, self)
        action.setShortcut(QKeySequence(shortcut))
        action.setToolTip(_shortcut_tip(tip, action))
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    # --- fields table ----------------------------------------------------------------------

    def add_field_row(self, field: TemplateField) -> None:
        """Append a row showing `field`."""
        row = self.fields_table.rowCount()
        self.fields_table.insertRow(row)
        choices = _US_STATES_CELL if field.choices == US_STATES else ", ".join(field.choices)
        name_item = QTableWidgetItem(field.name)
        name_item.setData(_PREVIOUS_NAME_ROLE, field.name)
        self.fields_table.setItem(row, _NAME, name_item)
        self.fields_table.setItem(row, _LABEL, QTableWidgetItem(field.label))
        self.fields_table.setItem(row, _DEFAULT, QTableWidgetItem(field.default))
        self.fields_table.setItem(row, _CHOICES, QTableWidgetItem(choices))
        kind_box = QComboBox()
        kind_box.addItems(list(FIELD_KINDS))
        kind_box.setCurrentText(field.kind)
        kind_box.setAccessibleName(f"Kind of field {field.name or row + 1}")
        self.fields_table.setCellWidget(row, _KIND, kind_box)

    def _field_item_changed(self, item: QTableWidgetItem) -> None:
        # Renaming a field renames its placeholders in the text, so the template stays valid.
        if item.column() != _NAME:
            return
        previous = item.data(_PREVIOUS_NAME_ROLE)
        name = item.text().strip()
        item.setData(_PREVIOUS_NAME_ROLE, name)
        if not previous or not name.isidentifier() or name == previous:
            return
        text = self.text_edit.toPlainText()
        # A placeholder is "{name}" that is not part of a literal "{{" or "}}".
        pattern = re.compile(r"(?<!\{)\{" + re.escape(previous) + r"\}(?!\})")
        renamed = pattern.sub(lambda _match: "{" + name + "}", text)
        if renamed != text:
            self.text_edit.setPlainText(renamed)

    def add_empty_field(self) -> None:
        """Append a text field row with a free name, ready to be filled in."""
        name = field_name_for("field", self.field_names())
        self.add_field_row(TemplateField(name, name.replace("_", " ").title(), "text", "", ()))
        self.fields_table.setCurrentCell(self.fields_table.rowCount() - 1, _NAME)

    def remove_current_field(self) -> None:
        """Remove the selected field row. The text keeps its {name} until the user edits it."""
        row = self.fields_table.currentRow()
        if row >= 0:
            self.fields_table.removeRow(row)

    def make_field_from_selection(self) -> None:
        """Replace the words selected in the text with a new field whose default is the words."""
        cursor = self.text_edit.textCursor()
        document = self.text_edit.document()
        text = document_text(document)
        # Qt counts UTF-16 code units, so the offsets are taken from the text before each end.
        start = len(text_before(document, cursor.selectionStart()))
        end = len(text_before(document, cursor.selectionEnd()))
        words = text[start:end]
        name = field_name_for(words, self.field_names()) if words.strip() else ""
        try:
            new_text, field = make_field(text, start, end, name)
        except LibraryError as error:
            self._show_error(str(error))
            return
        self.text_edit.setPlainText(new_text)
        self.add_field_row(field)
        self.error_label.setVisible(False)

    def field_names(self) -> list[str]:
        """Return the names in the fields table, in row order."""
        names = []
        for row in range(self.fields_table.rowCount()):
            item = self.fields_table.item(row, _NAME)
            names.append(item.text().strip() if item is not None else "")
        return names

    def _cell(self, row: int, column: int) -> str:
        item = self.fields_table.item(row, column)
        return item.text().strip() if item is not None else ""

    def fields(self) -> tuple[TemplateField, ...]:
        """Return the fields of the table. The template's own checks reject invalid ones."""
        fields = []
        for row in range(self.fields_table.rowCount()):
            kind_box = self.fields_table.cellWidget(row, _KIND)
            kind = kind_box.currentText() if isinstance(kind_box, QComboBox) else "text"
            choices_cell = self._cell(row, _CHOICES)
            choices: tuple[str, ...] = ()
            if kind == CHOICE_KIND:
                if choices_cell.casefold() == _US_STATES_CELL:
                    choices = US_STATES
                else:
                    choices = tuple(item.strip() for item in choices_cell.split(",") if item)
            default = self._cell(row, _DEFAULT)
            if kind == DATE_KIND and not default:
                default = TODAY
            name = self._cell(row, _NAME)
            label = self._cell(row, _LABEL) or name
            fields.append(TemplateField(name, label, kind, default, choices))
        return tuple(fields)

    def draft(self) -> TemplateDraft:
        """Return the template as entered."""
        return TemplateDraft(
            title=self.title_edit.text().strip(),
            category=self.category_box.currentText().strip(),
            description=self.description_edit.text().strip(),
            text=document_text(self.text_edit.document()),
            fields=self.fields(),
        )

    def _show_error(self, message: str) -> None:
        message = message.replace(
            UNDECLARED_FIELD_ADVICE,
            "Add a field with that name in the Fields table, or write the braces as {{ and }} "
            "if they are literal text.",
        )
        self.error_label.setText(message)
        self.error_label.setVisible(True)

    def accept(self) -> None:
        """Save the template; on an invalid template show why and stay open."""
        draft = self.draft()
        if not draft.title:
            self._show_error("A template needs a title. Enter one.")
            self.title_edit.setFocus()
            return
        try:
            self.saved = self._save(draft)
        except (TemplateError, LibraryError) as error:
            self._show_error(str(error))
            return
        super().accept()


class ImportPackDialog(QDialog):
    """Dialog that lists a pack's entries and the action an import takes for each clash."""

    def __init__(self, path: Path, entries: list[PackEntry], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Import template pack: {path.name}")
        self.entries = entries
        self.resolution_boxes: dict[str, QComboBox] = {}

        self.table = QTableWidget(len(entries), 3)
        self.table.setHorizontalHeaderLabels(["Template", "Status", "Action"])
        self.table.setAccessibleName("Templates in the pack")
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setWordWrap(True)
        for row, entry in enumerate(entries):
            self.table.setItem(row, 0, QTableWidgetItem(entry.name))
            status = QTableWidgetItem(self._status(entry))
            status.setToolTip(entry.error or status.text())
            self.table.setItem(row, 1, status)
            if entry.template is not None and entry.conflict is not None and not entry.unchanged:
                box = QComboBox()
                for resolution in Resolution:
                    box.addItem(resolution.value.capitalize(), resolution)
                box.setAccessibleName(f"What to do with {entry.name}")
                self.table.setCellWidget(row, 2, box)
                self.resolution_boxes[entry.template.id] = box
            else:
                action = "Import" if entry.template is not None and not entry.unchanged else "None"
                self.table.setItem(row, 2, QTableWidgetItem(action))
        self.table.resizeRowsToContents()

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.import_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.import_button.setText("Import")
        self.import_button.setAccessibleName("Import the pack")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(
            QLabel("Choose what to do with templates the library already has, then Import.")
        )
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(760, 380)

    @staticmethod
    def _status(entry: PackEntry) -> str:
        if entry.template is None:
            return f"Invalid, will be skipped: {entry.error}"
        if entry.unchanged:
            return "Already in the library, unchanged"
        if entry.conflict is not None:
            return f'Would overwrite "{entry.conflict.title}"'
        return "New"

    def resolutions(self) -> dict[str, Resolution]:
        """Return the chosen action for each conflicting entry, by template id."""
        return {
            template_id: box.currentData() for template_id, box in self.resolution_boxes.items()
        }


class ClauseLibraryDialog(QDialog):
    """Lists the clause library by category, with search and every library command."""

    # emitted after any change to the templates on disk
    library_changed = Signal()

    def __init__(
        self, library: ClauseLibrary, selection: str = "", parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Clause Library")
        self.library = library
        self.selection = selection
        self.child_dialog: QDialog | None = None  # the sub-dialog open now, for tests

        self.search_box = QLineEdit()
        self.search_box.setPlaceholderText("Search title, category, description and text")
        self.search_box.setAccessibleName("Search clause templates")
        self.search_box.setClearButtonEnabled(True)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Template", "Source"])
        self.tree.setAccessibleName("Clause templates by category")
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.preview = QPlainTextEdit()
        self.preview.setReadOnly(True)
        self.preview.setAccessibleName("Template text preview")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setAccessibleName("Clause library status")
        self.errors_label = QLabel()
        self.errors_label.setWordWrap(True)
        self.errors_label.setStyleSheet(_ERROR_STYLE)
        self.errors_label.setAccessibleName("Skipped template files")

        self._create_actions()
        buttons = QVBoxLayout()
        for action, name in (
            (self.new_from_selection_action, "New template from selection"),
            (self.new_action, "New template"),
            (self.edit_action, "Edit template"),
            (self.rename_action, "Rename template"),
            (self.delete_action, "Delete template"),
            (self.import_action, "Import template pack"),
            (self.export_action, "Export template pack"),
        ):
            buttons.addWidget(_button_for(action, name))
        buttons.addStretch(1)
        close_button = QPushButton("Close")
        close_button.setAccessibleName("Close the clause library")
        close_button.clicked.connect(self.accept)
        buttons.addWidget(close_button)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.search_box)
        left_layout.addWidget(self.tree, 1)
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(self.preview)
        splitter.setSizes([420, 420])
        top = QHBoxLayout()
        top.addWidget(splitter, 1)
        top.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.addLayout(top, 1)
        layout.addWidget(self.status_label)
        layout.addWidget(self.errors_label)

        self.search_box.textChanged.connect(self.refresh)
        self.tree.itemSelectionChanged.connect(self._selection_changed)
        self.tree.itemActivated.connect(lambda *_: self.edit_selected())
        self.refresh()
        self.resize(1080, 640)

    def _create_actions(self) -> None:
        def action(text: str, slot: Callable[[], object], shortcut: str, tip: str) -> QAction:
            created = QAction(text, self)
            created.setShortcut(QKeySequence(shortcut))
            created.setToolTip(_shortcut_tip(tip, created))
            created.setStatusTip(tip)
            created.triggered.connect(slot)
            self.addAction(created)
            return created

        self.new_from_selection_action = action(
            "New from &Selection…",
            self.new_from_selection,
            "Ctrl+Shift+N",
            "Make a template of the text selected in the document",
        )
        self.new_action = action("&New…", self.new_template, "Ctrl+N", "Write a new template")
        self.edit_action = action(
            "&Edit…", self.edit_selected, "Ctrl+E", "Edit the selected template"
        )
        self.rename_action = action(
            "&Rename…", self.rename_selected, "F2", "Give the selected template a new title"
        )
        self.delete_action = action(
            "&Delete",
            self.delete_selected,
            "Delete",
            "Delete your template, or your version of a built-in template",
        )
        self.import_action = action(
            "&Import Pack…", self.import_pack, "Ctrl+I", "Add the templates of a pack file"
        )
        self.export_action = action(
            "E&xport Pack…",
            self.export_pack,
            "Ctrl+Shift+E",
            "Save the selected templates as one pack file to share",
        )
        self.search_action = action(
            "&Search", self.search_box.setFocus, "Ctrl+F", "Search the clause library"
        )
        self.new_from_selection_action.setEnabled(bool(self.selection.strip()))

    # --- list ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Show the library's templates that match the search, keeping the selection."""
        selected = {template.id for template in self.selected_templates()}
        self.tree.clear()
        for category, templates in self.library.by_category(self.search_box.text()):
            parent = QTreeWidgetItem(self.tree, [category])
            parent.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            for template in templates:
                item = QTreeWidgetItem(
                    parent, [template.title, self.library.origin(template).value]
                )
                item.setData(0, _TEMPLATE_ROLE, template)
                item.setToolTip(0, template.description)
                item.setSelected(template.id in selected)
        self.tree.expandAll()
        errors = self.library.errors
        self.errors_label.setText(
            "Some template files were skipped:\n" + "\n".join(str(error) for error in errors)
        )
        self.errors_label.setVisible(bool(errors))
        self._selection_changed()

    def select(self, template_id: str) -> None:
        """Select the template `template_id` alone and scroll to it."""
        self.tree.clearSelection()
        for item in self._template_items():
            if item.data(0, _TEMPLATE_ROLE).id == template_id:
                item.setSelected(True)
                self.tree.setCurrentItem(item)
                self.tree.scrollToItem(item)

    def _template_items(self) -> list[QTreeWidgetItem]:
        items = []
        for index in range(self.tree.topLevelItemCount()):
            category = self.tree.topLevelItem(index)
            if category is None:
                continue
            for row in range(category.childCount()):
                child = category.child(row)
                if child is not None:
                    items.append(child)
        return items

    def shown_templates(self) -> list[ClauseTemplate]:
        """Return the templates the list shows, in display order."""
        return [item.data(0, _TEMPLATE_ROLE) for item in self._template_items()]

    def selected_templates(self) -> list[ClauseTemplate]:
        """Return the selected templates; a selected category counts as all its templates."""
        chosen: dict[str, ClauseTemplate] = {}
        for item in self.tree.selectedItems():
            children = [item.child(row) for row in range(item.childCount())] or [item]
            for child in children:
                template = child.data(0, _TEMPLATE_ROLE) if child is not None else None
                if template is not None:
                    chosen[template.id] = template
        return list(chosen.values())

    def current_template(self) -> ClauseTemplate | None:
        """Return the one selected template, or None when none or several are selected."""
        selected = self.selected_templates()
        return selected[0] if len(selected) == 1 else None

    def _selection_changed(self) -> None:
        template = self.current_template()
        self.preview.setPlainText(template.text if template else "")
        single = template is not None
        self.edit_action.setEnabled(single)
        self.rename_action.setEnabled(single)
        deletable = template is not None and self.library.origin(template) is not Origin.BUILT_IN
        self.delete_action.setEnabled(deletable)
        self.export_action.setEnabled(bool(self.selected_templates()))

    def _changed(self, message: str, template_id: str | None = None) -> None:
        self.refresh()
        if template_id is not None:
            self.select(template_id)
        self.status_label.setText(message)
        self.library_changed.emit()

    def _categories(self) -> list[str]:
        return sorted({template.category for template in self.library.templates}, key=str.casefold)

    # --- commands --------------------------------------------------------------------------

    def _open_editor(self, dialog: TemplateEditorDialog, verb: str) -> TemplateEditorDialog:
        def finished(result: int) -> None:
            self.child_dialog = None
            if result == QDialog.DialogCode.Accepted and dialog.saved is not None:
                saved = dialog.saved
                self._changed(f'{verb} "{saved.title}" ({saved.source.name}).', saved.id)

        dialog.finished.connect(finished)
        self.child_dialog = dialog
        dialog.open()
        return dialog

    def new_from_selection(self) -> TemplateEditorDialog | None:
        """Open the template editor on the document's selected text."""
        try:
            draft = draft_from_selection(self.selection)
        except LibraryError as error:
            self.status_label.setText(str(error))
            return None
        dialog = TemplateEditorDialog(
            draft, self._categories(), self.library.create, self, "New clause template"
        )
        dialog.title_edit.setFocus()
        return self._open_editor(dialog, "Created")

    def new_template(self) -> TemplateEditorDialog:
        """Open the template editor on an empty template."""
        draft = TemplateDraft("", "Other", "", "", ())
        dialog = TemplateEditorDialog(
            draft, self._categories(), self.library.create, self, "New clause template"
        )
        return self._open_editor(dialog, "Created")

    def edit_selected(self) -> TemplateEditorDialog | None:
        """Open the template editor on the selected template."""
        template = self.current_template()
        if template is None:
            return None
        template_id = template.id

        def save(draft: TemplateDraft) -> ClauseTemplate:
            return self.library.update(template_id, draft)

        dialog = TemplateEditorDialog(
            TemplateDraft.of(template), self._categories(), save, self, "Edit clause template"
        )
        return self._open_editor(dialog, "Saved")

    def rename_selected(self) -> QInputDialog | None:
        """Ask for a new title for the selected template."""
        template = self.current_template()
        if template is None:
            return None
        dialog = QInputDialog(self)
        dialog.setWindowTitle("Rename clause template")
        dialog.setLabelText(f'New title for "{template.title}":')
        dialog.setTextValue(template.title)
        template_id = template.id

        def finished(result: int) -> None:
            self.child_dialog = None
            if result != QDialog.DialogCode.Accepted:
                return
            try:
                renamed = self.library.rename(template_id, dialog.textValue())
            except (TemplateError, LibraryError) as error:
                self.status_label.setText(str(error))
                return
            self._changed(f'Renamed to "{renamed.title}" ({renamed.source.name}).', renamed.id)

        dialog.finished.connect(finished)
        self.child_dialog = dialog
        dialog.open()
        return dialog

    def delete_selected(self) -> QMessageBox | None:
        """Ask before deleting the selected user template or override."""
        template = self.current_template()
        if template is None:
            return None
        origin = self.library.origin(template)
        if origin is Origin.BUILT_IN:
            self.status_label.setText(
                f'"{template.title}" is a built-in template and cannot be deleted. '
                "Edit it to make your own version instead."
            )
            return None
        question = f'Delete the template "{template.title}"?'
        if origin is Origin.OVERRIDE:
            question = (
                f'Delete your version of "{template.title}"? The built-in template comes back.'
            )
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Delete clause template",
            question,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        box.setDefaultButton(QMessageBox.StandardButton.No)
        template_id = template.id

        def finished(_result: int) -> None:
            self.child_dialog = None
            if box.clickedButton() is not box.button(QMessageBox.StandardButton.Yes):
                return
            try:
                restored = self.library.delete(template_id)
            except LibraryError as error:
                self.status_label.setText(str(error))
                return
            if restored is not None:
                self._changed(f'Restored the built-in "{restored.title}".', restored.id)
            else:
                self._changed(f'Deleted "{template.title}".')

        box.finished.connect(finished)
        self.child_dialog = box
        box.open()
        return box

    def import_pack(self) -> None:
        """Ask for a pack file and show what importing it would do."""
        name, _ = QFileDialog.getOpenFileName(
            self, "Import template pack", str(Path.home()), PACK_FILTER
        )
        if name:
            self.import_pack_from(Path(name))

    def import_pack_from(self, path: Path) -> ImportPackDialog | None:
        """Read the pack `path` and open the dialog that lists its entries."""
        try:
            entries = self.library.read_pack(path)
        except LibraryError as error:
            log.warning("Could not import a template pack: %s", error)
            self.status_label.setText(str(error))
            return None
        dialog = ImportPackDialog(path, entries, self)

        def finished(result: int) -> None:
            self.child_dialog = None
            if result != QDialog.DialogCode.Accepted:
                return
            try:
                report = self.library.import_pack(entries, dialog.resolutions())
            except (TemplateError, LibraryError) as error:
                self.status_label.setText(str(error))
                return
            self._changed(report.summary())

        dialog.finished.connect(finished)
        self.child_dialog = dialog
        dialog.open()
        return dialog

    def export_pack(self) -> None:
        """Ask for a file name and save the selected templates there as a pack."""
        start = Path.home() / f"clauses{PACK_SUFFIX}"
        name, _ = QFileDialog.getSaveFileName(self, "Export template pack", str(start), PACK_FILTER)
        if name:
            self.export_pack_to(Path(name))

    def export_pack_to(self, path: Path) -> bool:
        """Save the selected templates to the pack file `path`."""
        ids = [template.id for template in self.selected_templates()]
        try:
            count = self.library.export_pack(ids, path)
        except LibraryError as error:
            self.status_label.setText(str(error))
            return False
        noun = "template" if count == 1 else "templates"
        self.status_label.setText(f"Exported {count} {noun} to {path}.")
        return True


class ClauseLibraryCommands(QObject):
    """The window's Clause Library command, which opens the manager on the editor's selection."""

    def __init__(
        self,
        window: QWidget,
        editor: DraftEditor,
        panel: TemplatesPanel,
        library: ClauseLibrary | None = None,
    ) -> None:
        super().__init__(window)
        self.window = window
        self.editor = editor
        self.panel = panel
        self._library = library
        self.dialog: ClauseLibraryDialog | None = None
        self.action = QAction("Clause &Library…", window)
        self.action.setShortcut(QKeySequence("Ctrl+Shift+L"))
        tip = "Create, edit, import and export clause templates"
        self.action.setStatusTip(tip)
        self.action.setToolTip(_shortcut_tip(tip, self.action))
        self.action.triggered.connect(self.open_manager)

    @property
    def library(self) -> ClauseLibrary:
        """The library on disk, read when the manager first opens."""
        if self._library is None:
            self._library = ClauseLibrary.default()
        return self._library

    def open_manager(self) -> ClauseLibraryDialog:
        """Open the manager window-modal; the templates panel follows its changes."""
        selection = to_plain(self.editor.textCursor().selectedText())
        dialog = ClauseLibraryDialog(self.library, selection, self.window)
        dialog.library_changed.connect(lambda: self.panel.set_library(self.library.library))
        dialog.finished.connect(lambda _result: setattr(self, "dialog", None))
        self.dialog = dialog
        dialog.open()
        return dialog
