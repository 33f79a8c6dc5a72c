"""Tests for the clause template loader and filler, with broken files written to tmp_path."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from kl3m_desk.resources import resource_path
from kl3m_desk.templates import (
    US_STATES,
    ClauseTemplate,
    TemplateError,
    TemplateFieldError,
    load_library,
    load_template,
)

BUILT_IN_IDS = (
    "assignment",
    "confidentiality",
    "dispute_resolution",
    "entire_agreement",
    "force_majeure",
    "governing_law",
    "indemnification",
    "limitation_of_liability",
    "notices",
    "severability",
    "termination",
)

# A valid template with a required text field and a choice field with a default.
VALID_TEMPLATE = """
title = "Payment Terms"
category = "Money"
description = "Sets when invoices are due."
text = '''

Payment. {customer} shall pay each invoice within {days} days. '''

[[fields]]
name = "customer"
label = "Paying party"

[[fields]]
name = "days"
label = "Days to pay"
kind = "choice"
choices = ["thirty (30)", "sixty (60)"]
default = "thirty (30)"
"""


def write(folder: Path, name: str, content: str) -> Path:
    path = folder / name
    path.write_text(content, encoding="utf-8")
    return path


def built_in(template_id: str) -> ClauseTemplate:
    return load_template(resource_path("templates", f"{template_id}.toml"))


def required_values(template: ClauseTemplate) -> dict[str, str]:
    """Return a valid value for every field that has no default."""
    return {
        field.name: field.choices[0] if field.choices else f"Value of {field.name}"
        for field in template.fields
        if not field.default
    }


# Built-in templates


def test_built_ins_load_without_errors() -> None:
    library = load_library()

    assert library.errors == ()
    assert sorted(template.id for template in library.templates) == list(BUILT_IN_IDS)


def test_built_ins_sorted_by_category_then_title() -> None:
    templates = load_library().templates

    keys = [(template.category, template.title) for template in templates]
    assert keys == sorted(keys)


@pytest.mark.parametrize("template_id", BUILT_IN_IDS)
def test_built_in_fills_completely(template_id: str) -> None:
    template = built_in(template_id)

    filled = template.fill(required_values(template))

    assert "{" not in filled
    assert "}" not in filled
    assert filled.endswith(" ")
    assert not filled.endswith("  ")
    assert filled.rstrip().endswith(".")
    assert not filled.startswith("\n")


@pytest.mark.parametrize("template_id", BUILT_IN_IDS)
def test_built_in_metadata_present(template_id: str) -> None:
    template = built_in(template_id)

    assert template.id == template_id
    assert template.title
    assert template.description
    assert template.category != "Other"
    assert template.text.startswith(f"{template.title}. ")


def test_governing_law_contains_state() -> None:
    template = built_in("governing_law")

    filled = template.fill({"state": "New York"})

    assert "New York" in filled
    assert "Delaware" not in filled


def test_governing_law_defaults_to_delaware() -> None:
    assert "Delaware" in built_in("governing_law").fill({})


def test_us_states_list() -> None:
    assert len(US_STATES) == 51
    assert list(US_STATES) == sorted(US_STATES)
    assert "District of Columbia" in US_STATES
    assert len(set(US_STATES)) == 51


# Loading one file


def test_load_template_reads_fields(tmp_path: Path) -> None:
    template = load_template(write(tmp_path, "payment.toml", VALID_TEMPLATE))

    assert template.id == "payment"
    assert template.title == "Payment Terms"
    assert template.category == "Money"
    assert template.source == tmp_path / "payment.toml"
    assert [field.name for field in template.fields] == ["customer", "days"]
    assert template.fields[0].kind == "text"
    assert template.fields[0].default == ""
    assert template.fields[0].choices == ()
    assert template.fields[1].choices == ("thirty (30)", "sixty (60)")


def test_load_template_strips_leading_newlines(tmp_path: Path) -> None:
    template = load_template(write(tmp_path, "payment.toml", VALID_TEMPLATE))

    assert template.text.startswith("Payment.")
    assert template.text.endswith("days. ")


def test_load_template_category_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "plain.toml", 'title = "Plain"\ntext = "Plain text. "\n')

    template = load_template(path)

    assert template.category == "Other"
    assert template.description == ""
    assert template.fields == ()


def test_load_template_us_states_choices(tmp_path: Path) -> None:
    content = """
title = "Venue"
text = "Venue. The courts of {state} have jurisdiction. "
[[fields]]
name = "state"
label = "State"
kind = "choice"
choices = "us_states"
"""
    template = load_template(write(tmp_path, "venue.toml", content))

    assert template.fields[0].choices == US_STATES


def test_load_template_keeps_literal_braces(tmp_path: Path) -> None:
    content = 'title = "Braces"\ntext = "Use {{this}} for {name}. "\n[[fields]]\n'
    content += 'name = "name"\nlabel = "Name"\n'
    template = load_template(write(tmp_path, "braces.toml", content))

    assert template.fill({"name": "Acme"}) == "Use {this} for Acme. "


def test_undeclared_placeholder_names_field_and_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "undeclared.toml",
        'title = "Bad"\ntext = "{company} shall pay {counterparty}. "\n'
        '[[fields]]\nname = "company"\nlabel = "Company"\n',
    )

    with pytest.raises(TemplateError) as raised:
        load_template(path)

    message = str(raised.value)
    assert "{counterparty}" in message
    assert "undeclared.toml" in message
    assert not isinstance(raised.value, TemplateFieldError)


FIELD = '[[fields]]\nname = "party"\nlabel = "Party"\n'


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param('text = "Text. "\n', '"title" is missing', id="missing-title"),
        pytest.param('title = "T"\n', '"text" is missing', id="missing-text"),
        pytest.param('title = 3\ntext = "Text. "\n', "an integer", id="title-not-string"),
        pytest.param('title = "  "\ntext = "Text. "\n', '"title" is blank', id="blank-title"),
        pytest.param(
            'title = "T"\ntext = "Text. "\nauthor = "Me"\n', "unknown key(s) author", id="extra-key"
        ),
        pytest.param(
            'title = "T"\ntext = "Text. "\nfields = "party"\n',
            "array of tables",
            id="fields-string",
        ),
        pytest.param(
            'title = "T"\ntext = "{party} {party}. "\n' + FIELD + FIELD,
            'field "party" is declared twice',
            id="duplicate-field",
        ),
        pytest.param(
            'title = "T"\ntext = "{party}. "\n[[fields]]\nname = "the party"\nlabel = "Party"\n',
            '"the party" in [[fields]] entry 1 is not a valid identifier',
            id="bad-identifier",
        ),
        pytest.param(
            'title = "T"\ntext = "{party}. "\n[[fields]]\nname = "party"\n',
            '"label" of field "party" is missing',
            id="missing-label",
        ),
        pytest.param(
            'title = "T"\ntext = "{party}. "\n' + FIELD + 'kind = "currency"\n',
            'unknown kind "currency"',
            id="unknown-kind",
        ),
        pytest.param(
            'title = "T"\ntext = "{party}. "\n' + FIELD + 'kind = "choice"\n',
            "choice field without choices",
            id="choice-without-choices",
        ),
        pytest.param(
            'title = "T"\ntext = "{party}. "\n' + FIELD + 'kind = "choice"\nchoices = []\n',
            "non-empty list",
            id="empty-choices",
        ),
        pytest.param(
            'title = "T"\ntext = "{party}. "\n' + FIELD + 'kind = "choice"\nchoices = "states"\n',
            "list of strings",
            id="unknown-choices-name",
        ),
        pytest.param(
            'title = "T"\ntext = "{party}. "\n' + FIELD + 'choices = ["A"]\n',
            "text field but has choices",
            id="text-with-choices",
        ),
        pytest.param(
            'title = "T"\ntext = "{party}. "\n'
            + FIELD
            + 'kind = "choice"\nchoices = ["A", "B"]\ndefault = "C"\n',
            'default "C", which is not one of its choices',
            id="default-outside-choices",
        ),
        pytest.param(
            'title = "T"\ntext = "Text. "\n' + FIELD,
            'field "party" is declared but the text does not use it',
            id="unused-field",
        ),
        pytest.param('title = "T"\ntext = "Open { brace. "\n', "malformed braces", id="open-brace"),
        pytest.param(
            'title = "T"\ntext = "Close } brace. "\n', "malformed braces", id="close-brace"
        ),
        pytest.param(
            'title = "T"\ntext = "Positional {}. "\n', "not a field name", id="positional"
        ),
        pytest.param('title = "T"\ntext = "{party!r}. "\n' + FIELD, "format spec", id="conversion"),
    ],
)
def test_load_template_rejects(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path, "broken.toml", content)

    with pytest.raises(TemplateError) as raised:
        load_template(path)

    assert expected in str(raised.value)
    assert str(path) in str(raised.value)


def test_invalid_toml_reports_position(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.toml", 'title = "T"\ntext = \n')

    with pytest.raises(TemplateError) as raised:
        load_template(path)

    message = str(raised.value)
    assert "broken.toml" in message
    assert "not valid TOML" in message
    assert re.search(r"line 2, column \d+", message)


def test_non_utf8_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('title = "Café"\ntext = "Text. "\n'.encode("latin-1"))

    with pytest.raises(TemplateError) as raised:
        load_template(path)

    assert "latin1.toml" in str(raised.value)
    assert "UTF-8" in str(raised.value)


def test_utf8_byte_order_mark_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes('title = "Café"\ntext = "Text. "\n'.encode("utf-8-sig"))

    assert load_template(path).title == "Café"


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="not found"):
        load_template(tmp_path / "absent.toml")


# Filling


@pytest.fixture
def payment(tmp_path: Path) -> ClauseTemplate:
    return load_template(write(tmp_path, "payment.toml", VALID_TEMPLATE))


def test_fill_uses_values_and_defaults(payment: ClauseTemplate) -> None:
    filled = payment.fill({"customer": "  Acme Corp. "})

    assert filled == "Payment. Acme Corp. shall pay each invoice within thirty (30) days. "


def test_fill_blank_value_uses_default(payment: ClauseTemplate) -> None:
    filled = payment.fill({"customer": "Acme", "days": "   "})

    assert "thirty (30)" in filled


def test_fill_accepts_other_choice(payment: ClauseTemplate) -> None:
    assert "sixty (60)" in payment.fill({"customer": "Acme", "days": "sixty (60)"})


def test_fill_inserts_braces_in_values(payment: ClauseTemplate) -> None:
    assert "{Acme}" in payment.fill({"customer": "{Acme}"})


def test_fill_missing_value_raises(payment: ClauseTemplate) -> None:
    with pytest.raises(TemplateFieldError) as raised:
        payment.fill({})

    message = str(raised.value)
    assert "Paying party" in message
    assert "customer" in message
    assert "Payment Terms" in message


def test_fill_blank_required_value_raises(payment: ClauseTemplate) -> None:
    with pytest.raises(TemplateFieldError, match="Paying party"):
        payment.fill({"customer": " \t"})


def test_fill_unknown_key_raises(payment: ClauseTemplate) -> None:
    with pytest.raises(TemplateFieldError) as raised:
        payment.fill({"customer": "Acme", "vendor": "Beta"})

    assert '"vendor"' in str(raised.value)
    assert "Payment Terms" in str(raised.value)


def test_fill_choice_outside_choices_raises(payment: ClauseTemplate) -> None:
    with pytest.raises(TemplateFieldError) as raised:
        payment.fill({"customer": "Acme", "days": "ten (10)"})

    message = str(raised.value)
    assert "Days to pay" in message
    assert "ten (10)" in message
    assert "sixty (60)" in message


def test_fill_state_outside_us_states_raises() -> None:
    with pytest.raises(TemplateFieldError, match="Governing state"):
        built_in("governing_law").fill({"state": "Ontario"})


# Loading folders


def test_library_skips_invalid_toml(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "payment.toml", VALID_TEMPLATE)
    write(tmp_path, "broken.toml", 'title = "Broken\ntext = "Text. "\n')

    with caplog.at_level(logging.WARNING, logger="kl3m_desk.templates"):
        library = load_library([tmp_path])

    assert [template.id for template in library.templates] == ["payment"]
    assert len(library.errors) == 1
    assert "broken.toml" in str(library.errors[0])
    assert "line 1" in str(library.errors[0])
    assert "broken.toml" in caplog.text


def test_library_reports_non_utf8_file(tmp_path: Path) -> None:
    write(tmp_path, "payment.toml", VALID_TEMPLATE)
    (tmp_path / "latin1.toml").write_bytes(b'title = "Caf\xe9"\ntext = "Text. "\n')

    library = load_library([tmp_path])

    assert [template.id for template in library.templates] == ["payment"]
    assert len(library.errors) == 1
    assert "latin1.toml" in str(library.errors[0])


def test_library_ignores_other_files(tmp_path: Path) -> None:
    write(tmp_path, "payment.toml", VALID_TEMPLATE)
    write(tmp_path, "notes.txt", "not a template")
    (tmp_path / "folder.toml").mkdir()

    library = load_library([tmp_path])

    assert [template.id for template in library.templates] == ["payment"]
    assert library.errors == ()


def test_library_user_folder_overrides_built_in(tmp_path: Path) -> None:
    override = 'title = "Governing Law (firm form)"\ntext = "Governing Law. New York law. "\n'
    write(tmp_path, "governing_law.toml", override)

    library = load_library([resource_path("templates"), tmp_path])

    matching = [template for template in library.templates if template.id == "governing_law"]
    assert len(matching) == 1
    assert matching[0].title == "Governing Law (firm form)"
    assert matching[0].source == tmp_path / "governing_law.toml"
    assert len(library.templates) == len(BUILT_IN_IDS)


def test_library_broken_override_keeps_built_in(tmp_path: Path) -> None:
    write(tmp_path, "governing_law.toml", 'title = "Governing Law"\n')

    library = load_library([resource_path("templates"), tmp_path])

    matching = [template for template in library.templates if template.id == "governing_law"]
    assert len(library.errors) == 1
    assert len(matching) == 1
    assert matching[0].source == resource_path("templates", "governing_law.toml")


def test_library_missing_folder_is_empty(tmp_path: Path) -> None:
    library = load_library([tmp_path / "absent"])

    assert library.templates == ()
    assert library.errors == ()


def test_library_file_as_folder_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "payment.toml", VALID_TEMPLATE)

    library = load_library([path])

    assert library.templates == ()
    assert len(library.errors) == 1
    assert "not a folder" in str(library.errors[0])
