"""Clause templates: the opening words of a clause, with fill-in fields, stored as TOML files.

The user picks a template, fills in its fields and inserts the text at the cursor, and the language
model then continues the clause. A template file is named `<id>.toml` and looks like this:

    title = "Governing Law"          # required
    category = "Disputes"            # optional, "Other" when absent
    description = "Tooltip text."    # optional
    text = "Governing Law. This Agreement ... the internal laws of {state}, ... "   # required

    [[fields]]                       # one table per placeholder in text
    name = "state"                   # a Python identifier, written {state} in text
    label = "Governing state"        # shown in the fill-in dialog
    kind = "choice"                  # "text" (when absent) or "choice"
    choices = "us_states"            # choice fields only: "us_states" or a list of strings
    default = "Delaware"             # optional; without it the user must enter a value

The text follows str.format rules: `{name}` is a field and `{{` and `}}` are literal braces. Every
placeholder must be a declared field, and every declared field must appear in the text. The loader
drops leading newlines of the text but keeps trailing whitespace, so a text that ends with a space
lets the model's continuation start a new sentence of the same paragraph.
"""

from __future__ import annotations

import logging
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from kl3m_desk.resources import resource_path

logger = logging.getLogger(__name__)

US_STATES: tuple[str, ...] = (
    "Alabama",
    "Alaska",
    "Arizona",
    "Arkansas",
    "California",
    "Colorado",
    "Connecticut",
    "Delaware",
    "District of Columbia",
    "Florida",
    "Georgia",
    "Hawaii",
    "Idaho",
    "Illinois",
    "Indiana",
    "Iowa",
    "Kansas",
    "Kentucky",
    "Louisiana",
    "Maine",
    "Maryland",
    "Massachusetts",
    "Michigan",
    "Minnesota",
    "Mississippi",
    "Missouri",
    "Montana",
    "Nebraska",
    "Nevada",
    "New Hampshire",
    "New Jersey",
    "New Mexico",
    "New York",
    "North Carolina",
    "North Dakota",
    "Ohio",
    "Oklahoma",
    "Oregon",
    "Pennsylvania",
    "Rhode Island",
    "South Carolina",
    "South Dakota",
    "Tennessee",
    "Texas",
    "Utah",
    "Vermont",
    "Virginia",
    "Washington",
    "West Virginia",
    "Wisconsin",
    "Wyoming",
)

_TEXT_KIND = "text"
_CHOICE_KIND = "choice"
_FIELD_KINDS = (_TEXT_KIND, _CHOICE_KIND)

# The `choices` value that selects US_STATES, so templates need not list the states.
_US_STATES_CHOICES = "us_states"

_DEFAULT_CATEGORY = "Other"
_TOP_LEVEL_KEYS = ("title", "category", "description", "text", "fields")
_FIELD_KEYS = ("name", "label", "kind", "choices", "default")

# An error message lists a choice field's choices only up to this many, so it never lists the
# 51 entries of US_STATES.
_MAX_LISTED_CHOICES = 10


class TemplateError(ValueError):
    """A template file that cannot be used. The message names the file, the problem and the fix."""


class TemplateFieldError(TemplateError):
    """A fill-in value that is missing, unknown or not among a choice field's choices."""


@dataclass(frozen=True)
class TemplateField:
    """One fill-in field of a template, written `{name}` in its text."""

    name: str
    label: str
    kind: str
    default: str
    choices: tuple[str, ...]


@dataclass(frozen=True)
class ClauseTemplate:
    """A clause template loaded from the file `source`, whose stem is the `id`."""

    id: str
    title: str
    category: str
    description: str
    text: str
    fields: tuple[TemplateField, ...]
    source: Path

    def fill(self, values: Mapping[str, str]) -> str:
        """Return the text with every field replaced by its value.

        Values are stripped of surrounding whitespace. An absent or blank value falls back to the
        field's default. TemplateFieldError is raised for a field with neither, for a key of
        `values` that is not a field of this template, and for a value outside a choice field's
        choices. Braces inside values are inserted as they are.
        """
        field_names = [field.name for field in self.fields]
        for key in values:
            if key not in field_names:
                raise TemplateFieldError(self._unknown_field_message(key, field_names))

        filled = {
            field.name: self._resolve(field, values.get(field.name, "")) for field in self.fields
        }
        return self.text.format_map(filled)

    def _resolve(self, field: TemplateField, value: str) -> str:
        value = value.strip() or field.default
        described = f'The field "{field.label}" ({field.name}) of the template "{self.title}"'
        if not value:
            raise TemplateFieldError(
                f"{described} is missing a value and has no default. Enter a value."
            )
        if field.kind == _CHOICE_KIND and value not in field.choices:
            raise TemplateFieldError(
                f'{described} has the invalid value "{value}", which is not one of its choices. '
                f"{_describe_choices(field.choices)}"
            )
        return value

    def _unknown_field_message(self, key: str, field_names: list[str]) -> str:
        known = f"Its fields are: {', '.join(field_names)}." if field_names else "It has no fields."
        return f'The template "{self.title}" has no field named "{key}". {known}'


@dataclass(frozen=True)
class TemplateLibrary:
    """The usable templates, sorted by category then title, and one error per skipped file."""

    templates: tuple[ClauseTemplate, ...]
    errors: tuple[TemplateError, ...]


def load_template(path: Path) -> ClauseTemplate:
    """Read and validate one template file, or raise TemplateError naming the file and problem."""
    data = _read_toml(path)

    unknown_keys = [key for key in data if key not in _TOP_LEVEL_KEYS]
    if unknown_keys:
        raise _invalid(
            path,
            f"it has the unknown key(s) {', '.join(unknown_keys)}. "
            f"The allowed keys are {', '.join(_TOP_LEVEL_KEYS)}.",
        )

    title = _read_string(path, data, "title", required=True).strip()
    # tomllib already drops the newline right after the opening quotes of a multi-line string.
    # Dropping any further leading newlines keeps the inserted text from starting on a blank line.
    text = _read_string(path, data, "text", required=True).lstrip("\n")
    category = _read_string(path, data, "category", required=False).strip() or _DEFAULT_CATEGORY
    description = _read_string(path, data, "description", required=False).strip()
    fields = _read_fields(path, data.get("fields", []))
    _check_placeholders(path, text, fields)

    return ClauseTemplate(
        id=path.stem,
        title=title,
        category=category,
        description=description,
        text=text,
        fields=fields,
        source=path,
    )


def load_library(folders: Sequence[Path] | None = None) -> TemplateLibrary:
    """Load every `*.toml` file in `folders`, skipping and collecting the files that are unusable.

    The default is the built-in folder, and ResourceNotFoundError is raised if it is missing. A
    folder that does not exist counts as empty, so a user's template folder need not be created
    first. A template replaces one with the same id from an earlier folder. A broken file does not,
    so the earlier template stays available.
    """
    if folders is None:
        folders = [resource_path("templates")]

    templates_by_id: dict[str, ClauseTemplate] = {}
    errors: list[TemplateError] = []
    for folder in folders:
        for path in _list_template_files(folder, errors):
            try:
                template = load_template(path)
            except TemplateError as error:
                logger.warning("Skipped a clause template: %s", error)
                errors.append(error)
                continue

            replaced = templates_by_id.get(template.id)
            if replaced is not None:
                logger.info(
                    "Clause template %s from %s replaces the one from %s",
                    template.id,
                    path,
                    replaced.source,
                )
            templates_by_id[template.id] = template

    ordered = sorted(
        templates_by_id.values(),
        key=lambda template: (template.category.casefold(), template.title.casefold(), template.id),
    )
    return TemplateLibrary(templates=tuple(ordered), errors=tuple(errors))


def _list_template_files(folder: Path, errors: list[TemplateError]) -> list[Path]:
    """Return the folder's template files in name order, appending an error if it cannot be read."""
    if not folder.exists():
        logger.debug("Clause template folder %s does not exist, so it adds no templates", folder)
        return []

    if not folder.is_dir():
        problem = "it is not a folder"
    else:
        try:
            # iterdir raises when the folder cannot be listed, but Path.glob (Python 3.11) ignores
            # PermissionError and would report an unreadable folder as empty.
            return sorted(
                path
                for path in folder.iterdir()
                if path.suffix.lower() == ".toml" and path.is_file()
            )
        except OSError as exc:
            problem = f"it cannot be read ({exc.strerror or exc})"

    error = TemplateError(
        f"The clause template folder {folder} was skipped because {problem}. "
        "Check the folder path and its permissions."
    )
    logger.warning("Skipped a clause template folder: %s", error)
    errors.append(error)
    return []


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise _invalid(path, "the file was not found.") from exc
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise _invalid(
            path, f"the file cannot be read ({reason}). Check that it is a readable file."
        ) from exc

    try:
        # utf-8-sig also accepts the byte order mark that some Windows editors write.
        source = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _invalid(
            path,
            f"the file is not valid UTF-8 (invalid byte at offset {exc.start}). "
            "Save it with UTF-8 encoding.",
        ) from exc

    try:
        return tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise _invalid(
            path, f"the file is not valid TOML: {exc}. Correct the syntax at that position."
        ) from exc


def _read_fields(path: Path, raw_fields: object) -> tuple[TemplateField, ...]:
    if not isinstance(raw_fields, list) or not all(isinstance(item, dict) for item in raw_fields):
        raise _invalid(
            path, "fields must be an array of tables. Write each field as a [[fields]] section."
        )

    fields: list[TemplateField] = []
    for position, table in enumerate(raw_fields, start=1):
        field = _read_field(path, position, table)
        if any(existing.name == field.name for existing in fields):
            raise _invalid(
                path,
                f'the field "{field.name}" is declared twice. Remove or rename one of the entries.',
            )
        fields.append(field)
    return tuple(fields)


def _read_field(path: Path, position: int, table: dict[str, Any]) -> TemplateField:
    where = f"[[fields]] entry {position}"
    unknown_keys = [key for key in table if key not in _FIELD_KEYS]
    if unknown_keys:
        raise _invalid(
            path,
            f"{where} has the unknown key(s) {', '.join(unknown_keys)}. "
            f"The allowed keys are {', '.join(_FIELD_KEYS)}.",
        )

    name = _read_string(path, table, "name", where=where, required=True)
    if not name.isidentifier():
        raise _invalid(
            path,
            f'the field name "{name}" in {where} is not a valid identifier. '
            "Use letters, digits and underscores, not starting with a digit.",
        )
    where = f'field "{name}"'
    label = _read_string(path, table, "label", where=where, required=True).strip()
    kind = _read_string(path, table, "kind", where=where, required=False).strip() or _TEXT_KIND
    if kind not in _FIELD_KINDS:
        raise _invalid(
            path, f'{where} has the unknown kind "{kind}". Use "{_TEXT_KIND}" or "{_CHOICE_KIND}".'
        )

    choices = _read_choices(path, table, where, kind)
    default = _read_string(path, table, "default", where=where, required=False).strip()
    if default and kind == _CHOICE_KIND and default not in choices:
        raise _invalid(
            path,
            f'{where} has the default "{default}", which is not one of its choices. '
            "Add it to the choices or change the default.",
        )

    return TemplateField(name=name, label=label, kind=kind, default=default, choices=choices)


def _read_choices(path: Path, table: dict[str, Any], where: str, kind: str) -> tuple[str, ...]:
    raw = table.get("choices")
    if kind == _TEXT_KIND:
        if raw is not None:
            raise _invalid(
                path,
                f'{where} is a text field but has choices. Set kind = "{_CHOICE_KIND}" '
                "or remove the choices.",
            )
        return ()

    if raw is None:
        raise _invalid(
            path,
            f'{where} is a choice field without choices. Add choices = "{_US_STATES_CHOICES}" '
            'or a list such as choices = ["First", "Second"].',
        )
    if raw == _US_STATES_CHOICES:
        return US_STATES

    valid_list = isinstance(raw, list) and all(isinstance(item, str) for item in raw)
    if not valid_list:
        raise _invalid(
            path,
            f'the choices of {where} must be "{_US_STATES_CHOICES}" or a list of strings, '
            f"not {_describe_toml_value(raw)}.",
        )
    choices = tuple(item.strip() for item in raw)
    if not choices or not all(choices):
        raise _invalid(
            path, f"the choices of {where} must be a non-empty list of non-blank strings."
        )
    if len(set(choices)) != len(choices):
        raise _invalid(path, f"the choices of {where} list a value twice. Remove the duplicate.")
    return choices


def _check_placeholders(path: Path, text: str, fields: tuple[TemplateField, ...]) -> None:
    """Raise TemplateError unless the placeholders in `text` and the declared fields match."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise _invalid(
            path,
            f"the text has malformed braces ({exc}). Write a field as {{name}} "
            "and a literal brace as {{ or }}.",
        ) from exc

    declared = {field.name for field in fields}
    used: set[str] = set()
    for _literal, name, format_spec, conversion in parsed:
        if name is None:
            continue
        # Positional "{}", indexed "{0}", "{a.b}" and "{a[0]}" would pass str.format but cannot be
        # filled from named fields.
        if not name.isidentifier():
            raise _invalid(
                path,
                f'the text contains the placeholder "{{{name}}}", which is not a field name. '
                "Write a field as {name} and a literal brace as {{ or }}.",
            )
        if format_spec or conversion:
            raise _invalid(
                path,
                f'the placeholder "{{{name}}}" has a conversion or format spec, which templates '
                f'do not support. Write it as "{{{name}}}".',
            )
        if name not in declared:
            raise _invalid(
                path,
                f'the text uses the placeholder "{{{name}}}", but no field named "{name}" is '
                "declared. Add a [[fields]] entry for it, or write the braces as {{ and }} "
                "if they are literal text.",
            )
        used.add(name)

    unused = [field.name for field in fields if field.name not in used]
    if unused:
        raise _invalid(
            path,
            f'the field "{unused[0]}" is declared but the text does not use it. '
            f'Add "{{{unused[0]}}}" to the text or remove the field.',
        )


def _read_string(
    path: Path, table: Mapping[str, Any], key: str, *, required: bool, where: str = ""
) -> str:
    """Return the string `table[key]`, or "" when an optional key is absent.

    `where` names the [[fields]] entry that `table` is, and is empty for the top level.
    """
    owner = f" of {where}" if where else ""
    if key not in table:
        if required:
            raise _invalid(path, f'the key "{key}"{owner} is missing. Add it as a string.')
        return ""

    value = table[key]
    if not isinstance(value, str):
        raise _invalid(
            path,
            f'the key "{key}"{owner} must be a string, not {_describe_toml_value(value)}. '
            "Put the value in double quotes.",
        )
    if required and not value.strip():
        raise _invalid(path, f'the key "{key}"{owner} is blank. Give it a value.')
    return value


def _describe_toml_value(value: object) -> str:
    # bool comes before int because bool is a subclass of int.
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
        ((datetime, date, time), "a date or time"),
    )
    for kind, description in kinds:
        if isinstance(value, kind):
            return description
    return type(value).__name__


def _describe_choices(choices: tuple[str, ...]) -> str:
    if len(choices) > _MAX_LISTED_CHOICES:
        return f"Choose one of the {len(choices)} values in its list."
    return f"Choose one of: {', '.join(choices)}."


def _invalid(path: Path, problem: str) -> TemplateError:
    """Build the error for a template file from `problem`, sentences that start in lowercase."""
    return TemplateError(f"The clause template {path} cannot be used: {problem}")
