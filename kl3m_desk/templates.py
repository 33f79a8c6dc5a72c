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
    kind = "choice"                  # "text" (when absent), "choice", "date" or "amount"
    choices = "us_states"            # choice fields only: "us_states" or a list of strings
    default = "Delaware"             # optional; without it the user must enter a value

A date field's default is "today" (also when absent) or an ISO date such as "2027-01-05", and its
value is inserted in US legal style, "January 5, 2027". An amount field holds US dollars: its
default and values are numbers such as "1250000", "$1,250,000" or "$0.00", inserted as
"$1,250,000.00".

The text follows str.format rules: `{name}` is a field and `{{` and `}}` are literal braces. Every
placeholder must be a declared field, and every declared field must appear in the text. The loader
drops leading newlines of the text but keeps trailing whitespace, so a text that ends with a space
lets the model's continuation start a new sentence of the same paragraph.
"""

from __future__ import annotations

import logging
import re
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import tomli_w

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

TEXT_KIND = "text"
CHOICE_KIND = "choice"
DATE_KIND = "date"
AMOUNT_KIND = "amount"
FIELD_KINDS = (TEXT_KIND, CHOICE_KIND, DATE_KIND, AMOUNT_KIND)

# The default of a date field that stands for the day the template is filled in.
TODAY = "today"

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# An amount as a person types it: an optional "$" or "USD", digits with or without commas between
# groups of three, and at most two decimal places.
_AMOUNT_PATTERN = re.compile(
    r"(?:\$|USD)?\s*(?P<number>\d{1,3}(?:,\d{3})+|\d+)(?P<cents>\.\d{1,2})?"
)

# The `choices` value that selects US_STATES, so templates need not list the states.
_US_STATES_CHOICES = "us_states"

_DEFAULT_CATEGORY = "Other"
_TOP_LEVEL_KEYS = ("title", "category", "description", "text", "fields")
_FIELD_KEYS = ("name", "label", "kind", "choices", "default")

# An error message lists a choice field's choices only up to this many, so it never lists the
# 51 entries of US_STATES.
_MAX_LISTED_CHOICES = 10


# The fix for a placeholder without a field, as a template file's author makes it. The template
# editor shows its own wording in place of this sentence.
UNDECLARED_FIELD_ADVICE = (
    "Add a [[fields]] entry for it, or write the braces as {{ and }} if they are literal text."
)


class TemplateError(ValueError):
    """A template file that cannot be used. The message names the file, the problem and the fix."""


class TemplateFieldError(TemplateError):
    """A fill-in value that is missing, unknown, not among a choice field's choices, or not a
    valid date or amount."""


def format_us_date(day: date) -> str:
    """Return `day` in US legal style, for example "January 5, 2027"."""
    return f"{_MONTHS[day.month - 1]} {day.day}, {day.year}"


def parse_amount(text: str) -> Decimal:
    """Return the dollar amount that `text` spells, such as "$1,250,000" or "1250000.5".

    Raises ValueError with a sentence that names the problem with `text`.
    """
    cleaned = text.strip()
    if cleaned.startswith(("-", "(", "$-", "-$")):
        raise ValueError("negative amounts are not supported")
    match = _AMOUNT_PATTERN.fullmatch(cleaned)
    if match is None:
        raise ValueError(
            "it is not an amount in dollars. Write digits with an optional $ sign, commas between "
            "thousands and at most two decimal places, such as $1,250,000.00"
        )
    return Decimal(match["number"].replace(",", "") + (match["cents"] or ""))


def format_amount(amount: Decimal) -> str:
    """Return `amount` in dollars with thousands separators and cents, such as "$1,250,000.00"."""
    return f"${amount:,.2f}"


def parse_date(text: str) -> date:
    """Return the date of "2027-01-05" or "January 5, 2027", raising ValueError otherwise.

    The second form is the one date fields insert, so a template made from text a lawyer
    selected in a document accepts that text as its default.
    """
    text = " ".join(text.split())
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"it is not a valid calendar date ({exc})") from exc
    try:
        return datetime.strptime(text, "%B %d, %Y").date()
    except ValueError:
        raise ValueError("it is not a date such as 2027-01-05 or January 5, 2027") from None


def resolve_date_default(default: str, today: date | None = None) -> date:
    """Return the date a date field's default stands for: `today` for "today", else the ISO date."""
    if default.strip().casefold() in ("", TODAY):
        return today or date.today()
    return parse_date(default)


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

    def fill(self, values: Mapping[str, str], today: date | None = None) -> str:
        """Return the text with every field replaced by its value.

        Values are stripped of surrounding whitespace. An absent or blank value falls back to the
        field's default. A date value is an ISO date and is inserted as "January 5, 2027", and an
        amount is inserted as "$1,250,000.00". `today` is the date a "today" default stands for,
        the current date when None. TemplateFieldError is raised for a field with neither value
        nor default, for a key of `values` that is not a field of this template, for a value
        outside a choice field's choices, and for an invalid date or amount. Braces inside values
        are inserted as they are.
        """
        field_names = [field.name for field in self.fields]
        for key in values:
            if key not in field_names:
                raise TemplateFieldError(self._unknown_field_message(key, field_names))

        filled = {
            field.name: self._resolve(field, values.get(field.name, ""), today)
            for field in self.fields
        }
        return self.text.format_map(filled)

    def _resolve(self, field: TemplateField, value: str, today: date | None) -> str:
        value = value.strip() or field.default
        described = f'The field "{field.label}" ({field.name}) of the template "{self.title}"'
        if field.kind == DATE_KIND:
            try:
                return format_us_date(resolve_date_default(value, today))
            except ValueError as exc:
                raise TemplateFieldError(
                    f'{described} has the invalid date "{value}": {exc}. Choose a date.'
                ) from exc
        if not value:
            raise TemplateFieldError(
                f"{described} is missing a value and has no default. Enter a value."
            )
        if field.kind == CHOICE_KIND and value not in field.choices:
            raise TemplateFieldError(
                f'{described} has the invalid value "{value}", which is not one of its choices. '
                f"{_describe_choices(field.choices)}"
            )
        if field.kind == AMOUNT_KIND:
            try:
                return format_amount(parse_amount(value))
            except ValueError as exc:
                raise TemplateFieldError(
                    f'{described} has the invalid amount "{value}": {exc}.'
                ) from exc
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
    return template_from_data(_read_toml(path), template_id=path.stem, source=path)


def template_from_data(
    data: Mapping[str, Any], *, template_id: str, source: Path, described: str = ""
) -> ClauseTemplate:
    """Validate the TOML table of one template, or raise TemplateError naming it and the problem.

    `described` names the template in error messages, and is the file `source` when empty.
    """
    origin = described or str(source)
    unknown_keys = [key for key in data if key not in _TOP_LEVEL_KEYS]
    if unknown_keys:
        raise _invalid(
            origin,
            f"it has the unknown key(s) {', '.join(unknown_keys)}. "
            f"The allowed keys are {', '.join(_TOP_LEVEL_KEYS)}.",
        )

    title = _read_string(origin, data, "title", required=True).strip()
    # tomllib already drops the newline right after the opening quotes of a multi-line string.
    # Dropping any further leading newlines keeps the inserted text from starting on a blank line.
    text = _read_string(origin, data, "text", required=True).lstrip("\n")
    category = _read_string(origin, data, "category", required=False).strip() or _DEFAULT_CATEGORY
    description = _read_string(origin, data, "description", required=False).strip()
    fields = _read_fields(origin, data.get("fields", []))
    _check_placeholders(origin, text, fields)

    return ClauseTemplate(
        id=template_id,
        title=title,
        category=category,
        description=description,
        text=text,
        fields=fields,
        source=source,
    )


def template_data(template: ClauseTemplate) -> dict[str, Any]:
    """Return the TOML table of `template`, which `template_from_data` reads back unchanged."""
    data: dict[str, Any] = {"title": template.title, "category": template.category}
    if template.description:
        data["description"] = template.description
    data["text"] = template.text
    fields = []
    for field in template.fields:
        table: dict[str, Any] = {"name": field.name, "label": field.label, "kind": field.kind}
        if field.kind == CHOICE_KIND:
            table["choices"] = (
                _US_STATES_CHOICES if field.choices == US_STATES else list(field.choices)
            )
        if field.default:
            table["default"] = field.default
        fields.append(table)
    if fields:
        data["fields"] = fields
    return data


def template_to_toml(template: ClauseTemplate) -> str:
    """Return the contents of a template file for `template`."""
    return tomli_w.dumps(template_data(template), multiline_strings=True)


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


def _read_fields(source: str, raw_fields: object) -> tuple[TemplateField, ...]:
    if not isinstance(raw_fields, list) or not all(isinstance(item, dict) for item in raw_fields):
        raise _invalid(
            source, "fields must be an array of tables. Write each field as a [[fields]] section."
        )

    fields: list[TemplateField] = []
    for position, table in enumerate(raw_fields, start=1):
        field = _read_field(source, position, table)
        if any(existing.name == field.name for existing in fields):
            raise _invalid(
                source,
                f'the field "{field.name}" is declared twice. Remove or rename one of the entries.',
            )
        fields.append(field)
    return tuple(fields)


def _read_field(source: str, position: int, table: dict[str, Any]) -> TemplateField:
    where = f"[[fields]] entry {position}"
    unknown_keys = [key for key in table if key not in _FIELD_KEYS]
    if unknown_keys:
        raise _invalid(
            source,
            f"{where} has the unknown key(s) {', '.join(unknown_keys)}. "
            f"The allowed keys are {', '.join(_FIELD_KEYS)}.",
        )

    name = _read_string(source, table, "name", where=where, required=True)
    if not name.isidentifier():
        raise _invalid(
            source,
            f'the field name "{name}" in {where} is not a valid identifier. '
            "Use letters, digits and underscores, not starting with a digit.",
        )
    where = f'field "{name}"'
    label = _read_string(source, table, "label", where=where, required=True).strip()
    kind = _read_string(source, table, "kind", where=where, required=False).strip() or TEXT_KIND
    if kind not in FIELD_KINDS:
        kinds = ", ".join(f'"{known}"' for known in FIELD_KINDS)
        raise _invalid(source, f'{where} has the unknown kind "{kind}". Use one of {kinds}.')

    choices = _read_choices(source, table, where, kind)
    default = _read_string(source, table, "default", where=where, required=False).strip()
    default = _check_default(source, where, kind, default, choices)
    return TemplateField(name=name, label=label, kind=kind, default=default, choices=choices)


def _check_default(
    source: str, where: str, kind: str, default: str, choices: tuple[str, ...]
) -> str:
    """Return the field's default, raising TemplateError when it is invalid for its kind."""
    if kind == CHOICE_KIND and default and default not in choices:
        raise _invalid(
            source,
            f'{where} has the default "{default}", which is not one of its choices. '
            "Add it to the choices or change the default.",
        )
    if kind == DATE_KIND:
        if default.casefold() in ("", TODAY):
            return TODAY
        try:
            # Stored as an ISO date, whichever form was entered.
            return parse_date(default).isoformat()
        except ValueError as exc:
            raise _invalid(
                source,
                f'{where} has the default "{default}", but {exc}. '
                f'Use "{TODAY}" or a date such as "2027-01-05".',
            ) from exc
    if kind == AMOUNT_KIND and default:
        try:
            parse_amount(default)
        except ValueError as exc:
            raise _invalid(source, f'{where} has the default "{default}", but {exc}.') from exc
    return default


def _read_choices(source: str, table: dict[str, Any], where: str, kind: str) -> tuple[str, ...]:
    raw = table.get("choices")
    if kind != CHOICE_KIND:
        if raw is not None:
            raise _invalid(
                source,
                f'{where} is a {kind} field but has choices. Set kind = "{CHOICE_KIND}" '
                "or remove the choices.",
            )
        return ()

    if raw is None:
        raise _invalid(
            source,
            f'{where} is a choice field without choices. Add choices = "{_US_STATES_CHOICES}" '
            'or a list such as choices = ["First", "Second"].',
        )
    if raw == _US_STATES_CHOICES:
        return US_STATES

    valid_list = isinstance(raw, list) and all(isinstance(item, str) for item in raw)
    if not valid_list:
        raise _invalid(
            source,
            f'the choices of {where} must be "{_US_STATES_CHOICES}" or a list of strings, '
            f"not {_describe_toml_value(raw)}.",
        )
    choices = tuple(item.strip() for item in raw)
    if not choices or not all(choices):
        raise _invalid(
            source, f"the choices of {where} must be a non-empty list of non-blank strings."
        )
    if len(set(choices)) != len(choices):
        raise _invalid(source, f"the choices of {where} list a value twice. Remove the duplicate.")
    return choices


def _check_placeholders(source: str, text: str, fields: tuple[TemplateField, ...]) -> None:
    """Raise TemplateError unless the placeholders in `text` and the declared fields match."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise _invalid(
            source,
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
                source,
                f'the text contains the placeholder "{{{name}}}", which is not a field name. '
                "Write a field as {name} and a literal brace as {{ or }}.",
            )
        if format_spec or conversion:
            raise _invalid(
                source,
                f'the placeholder "{{{name}}}" has a conversion or format spec, which templates '
                f'do not support. Write it as "{{{name}}}".',
            )
        if name not in declared:
            raise _invalid(
                source,
                f'the text uses the placeholder "{{{name}}}", but no field named "{name}" is '
                f"declared. {UNDECLARED_FIELD_ADVICE}",
            )
        used.add(name)

    unused = [field.name for field in fields if field.name not in used]
    if unused:
        raise _invalid(
            source,
            f'the field "{unused[0]}" is declared but the text does not use it. '
            f'Add "{{{unused[0]}}}" to the text or remove the field.',
        )


def _read_string(
    source: str, table: Mapping[str, Any], key: str, *, required: bool, where: str = ""
) -> str:
    """Return the string `table[key]`, or "" when an optional key is absent.

    `where` names the [[fields]] entry that `table` is, and is empty for the top level.
    """
    owner = f" of {where}" if where else ""
    if key not in table:
        if required:
            raise _invalid(source, f'the key "{key}"{owner} is missing. Add it as a string.')
        return ""

    value = table[key]
    if not isinstance(value, str):
        raise _invalid(
            source,
            f'the key "{key}"{owner} must be a string, not {_describe_toml_value(value)}. '
            "Put the value in double quotes.",
        )
    if required and not value.strip():
        raise _invalid(source, f'the key "{key}"{owner} is blank. Give it a value.')
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


def _invalid(source: Path | str, problem: str) -> TemplateError:
    """Build the error for a template file from `problem`, sentences that start in lowercase."""
    return TemplateError(f"The clause template {source} cannot be used: {problem}")
