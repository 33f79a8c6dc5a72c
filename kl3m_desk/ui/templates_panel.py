"""The clause template panel and the dialog for a template's fill-in fields."""

from __future__ import annotations

from PySide6.QtCore import QDate, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kl3m_desk.templates import (
    AMOUNT_KIND,
    CHOICE_KIND,
    DATE_KIND,
    ClauseTemplate,
    TemplateField,
    TemplateFieldError,
    TemplateLibrary,
    resolve_date_default,
)

# Qt's display format for a date field, the US legal style the filled text uses.
DATE_DISPLAY_FORMAT = "MMMM d, yyyy"

FieldInput = QLineEdit | QComboBox | QDateEdit

_TEMPLATE_ROLE = Qt.ItemDataRole.UserRole


class TemplatesPanel(QWidget):
    """Templates grouped by category, with a filter box; emits the template the user picks."""

    # ClauseTemplate chosen with Insert, Enter or a double click
    template_chosen = Signal(object)

    def __init__(self, library: TemplateLibrary, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.filter_box = QLineEdit()
        self.filter_box.setPlaceholderText("Filter clauses")
        self.filter_box.setAccessibleName("Filter clause templates")
        self.filter_box.setClearButtonEnabled(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setAccessibleName("Clause templates")
        self.insert_button = QPushButton("Insert and continue")
        self.insert_button.setToolTip(
            "Fill in the clause's fields, insert it at the cursor and let the model continue it."
        )
        self.errors_label = QLabel()
        self.errors_label.setWordWrap(True)
        # A long file path must not widen the panel and squeeze the editor.
        self.errors_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.errors_label.setVisible(False)

        layout = QVBoxLayout(self)
        layout.addWidget(self.filter_box)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.errors_label)
        layout.addWidget(self.insert_button)

        self.filter_box.textChanged.connect(self._apply_filter)
        self.tree.itemActivated.connect(self._choose_item)
        self.tree.currentItemChanged.connect(self._update_button)
        self.insert_button.clicked.connect(lambda: self._choose_item(self.tree.currentItem()))
        self.set_library(library)

    def set_library(self, library: TemplateLibrary) -> None:
        """Show the templates of `library` and name the files that were skipped."""
        self.tree.clear()
        categories: dict[str, QTreeWidgetItem] = {}
        for template in library.templates:
            parent = categories.get(template.category)
            if parent is None:
                parent = QTreeWidgetItem(self.tree, [template.category])
                parent.setFlags(Qt.ItemFlag.ItemIsEnabled)
                categories[template.category] = parent
            item = QTreeWidgetItem(parent, [template.title])
            item.setData(0, _TEMPLATE_ROLE, template)
            item.setToolTip(0, template.description)
        self.tree.expandAll()
        if library.errors:
            lines = "\n".join(str(error) for error in library.errors)
            message = f"Some templates were skipped:\n{lines}"
            # A zero-width space after each path separator lets a long path wrap.
            wrappable = message.replace("/", "/\u200b").replace("\\", "\\\u200b")
            self.errors_label.setText(wrappable)
            self.errors_label.setToolTip(message)
            self.errors_label.setVisible(True)
        else:
            self.errors_label.setVisible(False)
        self._update_button()

    def _categories(self) -> list[tuple[QTreeWidgetItem, list[QTreeWidgetItem]]]:
        groups = []
        for index in range(self.tree.topLevelItemCount()):
            category = self.tree.topLevelItem(index)
            assert category is not None
            children = [category.child(row) for row in range(category.childCount())]
            groups.append((category, [child for child in children if child is not None]))
        return groups

    def templates(self) -> list[ClauseTemplate]:
        """Return the templates shown, in display order."""
        return [
            child.data(0, _TEMPLATE_ROLE)
            for _category, children in self._categories()
            for child in children
        ]

    def _apply_filter(self, text: str) -> None:
        needle = text.strip().casefold()
        for category, children in self._categories():
            visible_children = 0
            for child in children:
                template: ClauseTemplate = child.data(0, _TEMPLATE_ROLE)
                haystack = " ".join(
                    (template.title, template.category, template.description, template.text)
                )
                matches = needle in haystack.casefold()
                child.setHidden(not matches)
                visible_children += matches
            category.setHidden(visible_children == 0)

    def _update_button(self, *_args: object) -> None:
        item = self.tree.currentItem()
        self.insert_button.setEnabled(item is not None and item.data(0, _TEMPLATE_ROLE) is not None)

    def _choose_item(self, item: QTreeWidgetItem | None, _column: int = 0) -> None:
        if item is None:
            return
        template = item.data(0, _TEMPLATE_ROLE)
        if template is not None:
            self.template_chosen.emit(template)


class TemplateFieldsDialog(QDialog):
    """Asks for the fields of one template and returns the filled text on accept."""

    def __init__(
        self, template: ClauseTemplate, remembered: dict[str, str], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.template = template
        self.filled_text = ""
        self.setWindowTitle(f"Insert clause: {template.title}")
        layout = QVBoxLayout(self)
        if template.description:
            description = QLabel(template.description)
            description.setWordWrap(True)
            layout.addWidget(description)

        form = QFormLayout()
        layout.addLayout(form)
        self.inputs: dict[str, FieldInput] = {}
        for field in template.fields:
            widget = self._create_input(field, remembered.get(field.name) or field.default)
            form.addRow(f"{field.label}:", widget)
            self.inputs[field.name] = widget

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #b00020;")
        self.error_label.setVisible(False)
        layout.addWidget(self.error_label)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Insert")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    @staticmethod
    def _create_input(field: TemplateField, initial: str) -> FieldInput:
        widget: FieldInput
        if field.kind == CHOICE_KIND:
            widget = QComboBox()
            widget.addItems(list(field.choices))
            if initial in field.choices:
                widget.setCurrentText(initial)
            elif field.default in field.choices:
                widget.setCurrentText(field.default)
        elif field.kind == DATE_KIND:
            widget = QDateEdit()
            widget.setCalendarPopup(True)
            widget.setDisplayFormat(DATE_DISPLAY_FORMAT)
            try:
                day = resolve_date_default(initial)
            except ValueError:  # a remembered value that is not a date falls back to the default
                day = resolve_date_default(field.default)
            widget.setDate(QDate(day.year, day.month, day.day))
        else:
            widget = QLineEdit(initial)
            if field.kind == AMOUNT_KIND:
                widget.setPlaceholderText("$0.00")
            elif not field.default:
                widget.setPlaceholderText("required")
        widget.setAccessibleName(field.label)
        return widget

    def values(self) -> dict[str, str]:
        """Return the values entered, keyed by field name; dates as ISO dates."""
        values = {}
        for name, widget in self.inputs.items():
            if isinstance(widget, QComboBox):
                values[name] = widget.currentText()
            elif isinstance(widget, QDateEdit):
                values[name] = widget.date().toString(Qt.DateFormat.ISODate)
            else:
                values[name] = widget.text()
        return values

    def accept(self) -> None:
        """Fill the template; on a missing or invalid value show why and stay open."""
        try:
            self.filled_text = self.template.fill(self.values())
        except TemplateFieldError as error:
            self.error_label.setText(str(error))
            self.error_label.setVisible(True)
            return
        super().accept()
