"""The clause library on disk: CRUD, overrides, packs, typed fields and per-document values."""

from __future__ import annotations

import tomllib
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from kl3m_desk import paths
from kl3m_desk.clause_library import (
    ClauseLibrary,
    LibraryError,
    Origin,
    Resolution,
    TemplateDraft,
    draft_from_selection,
    field_name_for,
    make_field,
    slugify,
)
from kl3m_desk.resources import resource_path
from kl3m_desk.review import ReviewFile, read_review_file, write_review_file
from kl3m_desk.templates import (
    US_STATES,
    TemplateError,
    TemplateField,
    TemplateFieldError,
    format_amount,
    format_us_date,
    load_library,
    parse_amount,
)

SPACED_HOME = "Données de l'étude"


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ClauseLibrary:
    """A library of the real built-in templates and a user folder under a non-ASCII path."""
    monkeypatch.setenv(paths.HOME_VARIABLE, str(tmp_path / SPACED_HOME))
    return ClauseLibrary.default()


def party_draft(title: str = "Non-Compete") -> TemplateDraft:
    field = TemplateField("party", "Restricted party", "text", "the Employee", ())
    return TemplateDraft(
        title,
        "Employment",
        "Keeps a party from competing.",
        "{party} shall not compete. ",
        (field,),
    )


# --- create, edit, rename, delete -------------------------------------------------------------


def test_create_writes_slug_file(library: ClauseLibrary) -> None:
    created = library.create(party_draft())

    assert created.id == "non_compete"
    assert created.source == library.user_folder / "non_compete.toml"
    assert SPACED_HOME in str(created.source)
    assert library.origin(created) is Origin.USER
    assert tomllib.loads(created.source.read_text(encoding="utf-8"))["title"] == "Non-Compete"
    assert created.fill({}) == "the Employee shall not compete. "


def test_create_makes_unique_file_names(library: ClauseLibrary) -> None:
    first = library.create(party_draft())
    second = library.create(party_draft())
    clashing_builtin = library.create(party_draft("Governing Law"))

    assert first.id == "non_compete"
    assert second.id == "non_compete_2"
    assert clashing_builtin.id == "governing_law_2"
    assert library.get("governing_law").source.parent == resource_path("templates")


def test_create_avoids_broken_file_name(library: ClauseLibrary) -> None:
    library.user_folder.mkdir(parents=True)
    broken = library.user_folder / "non_compete.toml"
    broken.write_text("title = ", encoding="utf-8")
    library.reload()

    created = library.create(party_draft())

    assert created.id == "non_compete_2"
    assert broken.read_text(encoding="utf-8") == "title = "


def test_create_from_selection(library: ClauseLibrary) -> None:
    selection = "Payment.\u2029The Buyer shall pay {the price} within thirty days."
    draft = draft_from_selection(selection, "Payment Terms", "Payments")
    created = library.create(draft)

    assert created.text == "Payment.\nThe Buyer shall pay {{the price}} within thirty days."
    assert created.fill({}) == "Payment.\nThe Buyer shall pay {the price} within thirty days."

    start = created.text.index("thirty")
    text, field = make_field(created.text, start, start + len("thirty"), "days")
    edited = library.update(
        created.id,
        TemplateDraft(created.title, created.category, "", text, (field,)),
    )
    assert edited.fields == (TemplateField("days", "thirty", "text", "thirty", ()),)
    assert edited.fill({"days": "sixty"}).endswith("within sixty days.")


def test_blank_selection_rejected() -> None:
    with pytest.raises(LibraryError, match="Select the clause text"):
        draft_from_selection(" \u2029 ")


def test_make_field_rejects_bad_input() -> None:
    text = "The {party} shall pay."
    with pytest.raises(LibraryError, match="not valid"):
        make_field(text, 0, 3, "1st")
    with pytest.raises(LibraryError, match="brace"):
        make_field(text, 0, 10, "name")
    with pytest.raises(LibraryError, match="Select the words"):
        make_field(text, 4, 4, "name")


def test_edit_keeps_id_and_checks_template(library: ClauseLibrary) -> None:
    created = library.create(party_draft())
    draft = TemplateDraft.of(created)

    edited = library.update(
        created.id,
        TemplateDraft(draft.title, "Restrictive covenants", "", draft.text, draft.fields),
    )

    assert edited.id == created.id
    assert edited.category == "Restrictive covenants"
    with pytest.raises(TemplateError, match="no field named"):
        library.update(created.id, TemplateDraft("X", "Y", "", "{missing} text", ()))
    assert library.get(created.id).category == "Restrictive covenants"


def test_rename_moves_user_file(library: ClauseLibrary) -> None:
    created = library.create(party_draft())

    renamed = library.rename(created.id, "Non-Solicitation")

    assert renamed.id == "non_solicitation"
    assert renamed.title == "Non-Solicitation"
    assert not created.source.exists()
    assert renamed.source.exists()
    with pytest.raises(LibraryError, match="title"):
        library.rename(renamed.id, "  ")


def test_delete_user_template(library: ClauseLibrary) -> None:
    created = library.create(party_draft())

    assert library.delete(created.id) is None

    assert not created.source.exists()
    assert all(template.id != created.id for template in library.templates)


def test_builtin_cannot_be_deleted(library: ClauseLibrary) -> None:
    with pytest.raises(LibraryError, match="built-in template and cannot be deleted"):
        library.delete("governing_law")

    assert (resource_path("templates") / "governing_law.toml").exists()


def test_builtin_override_and_restore(library: ClauseLibrary) -> None:
    builtin = library.get("governing_law")

    renamed = library.rename("governing_law", "Choice of Law")

    assert renamed.id == "governing_law"
    assert library.origin(renamed) is Origin.OVERRIDE
    assert renamed.source == library.user_folder / "governing_law.toml"
    assert [t.title for t in library.templates if t.id == "governing_law"] == ["Choice of Law"]

    restored = library.delete("governing_law")

    assert restored is not None
    assert restored.title == builtin.title
    assert library.origin(restored) is Origin.BUILT_IN
    assert not renamed.source.exists()


def test_search_and_categories(library: ClauseLibrary) -> None:
    library.create(party_draft())

    by_title = [t.id for t in library.search("NON-COMPETE")]
    by_text = [t.id for t in library.search("shall not compete")]
    by_description = [t.id for t in library.search("keeps a party")]
    by_category = [t.id for t in library.search("employment")]

    assert by_title == by_text == by_description == by_category == ["non_compete"]
    assert library.search("no such clause anywhere") == []
    groups = dict(library.by_category())
    assert [t.id for t in groups["Employment"]] == ["non_compete"]
    assert "governing_law" in [t.id for t in groups["Disputes"]]


def test_slugify_handles_non_ascii_and_reserved() -> None:
    assert slugify("Clause de confidentialité") == "clause_de_confidentialite"
    assert slugify("東京") == "template"
    assert slugify("CON") == "con_clause"
    assert len(slugify("word " * 40)) <= 60


# --- packs ------------------------------------------------------------------------------------


def test_pack_round_trip(library: ClauseLibrary, tmp_path: Path) -> None:
    library.create(party_draft())
    pack = tmp_path / SPACED_HOME / "Mes modèles.kl3mpack.toml"

    assert library.export_pack(["non_compete", "governing_law"], pack) == 2

    colleague = ClauseLibrary(resource_path("templates"), tmp_path / "colleague templates")
    entries = colleague.read_pack(pack)
    assert [entry.name for entry in entries] == ['"Non-Compete"', '"Governing Law"']
    assert entries[0].conflict is None
    assert entries[1].unchanged

    report = colleague.import_pack(entries)

    assert report.added == ('"Non-Compete"',)
    assert report.unchanged == ('"Governing Law"',)
    imported = colleague.get("non_compete")
    assert imported.fill({}) == library.get("non_compete").fill({})
    assert colleague.origin(imported) is Origin.USER


def test_pack_import_conflicts(library: ClauseLibrary, tmp_path: Path) -> None:
    original = library.create(party_draft())
    pack = tmp_path / "team.kl3mpack.toml"
    library.export_pack([original.id], pack)
    library.update(
        original.id,
        TemplateDraft("Non-Compete", "Mine", "", "{party} is mine. ", party_draft().fields),
    )

    entries = library.read_pack(pack)
    assert entries[0].conflict is not None
    assert entries[0].conflict.category == "Mine"

    skipped = library.import_pack(entries, {"non_compete": Resolution.SKIP})
    assert skipped.skipped == ('"Non-Compete"',)
    assert library.get("non_compete").category == "Mine"

    kept = library.import_pack(entries, {"non_compete": Resolution.KEEP_BOTH})
    assert kept.kept_both == ('"Non-Compete"',)
    titles = sorted(t.title for t in library.templates if t.category in ("Mine", "Employment"))
    assert titles == ["Non-Compete", "Non-Compete (2)"]

    replaced = library.import_pack(entries, {"non_compete": Resolution.REPLACE})
    assert replaced.replaced == ('"Non-Compete"',)
    assert library.get("non_compete").category == "Employment"


def test_pack_invalid_entry_named_and_skipped(library: ClauseLibrary, tmp_path: Path) -> None:
    pack = tmp_path / "mixed.kl3mpack.toml"
    pack.write_text(
        '[pack]\nformat = "kl3m-desk template pack"\nversion = 1\n\n'
        '[[templates]]\nid = "good"\ntitle = "Good Clause"\ntext = "Good text. "\n\n'
        '[[templates]]\nid = "bad_kind"\ntitle = "Bad Kind"\ntext = "{x}. "\n'
        '[[templates.fields]]\nname = "x"\nlabel = "X"\nkind = "percentage"\n\n'
        '[[templates]]\nid = "undeclared"\ntitle = "Undeclared"\ntext = "{who} agrees. "\n',
        encoding="utf-8",
    )

    entries = library.read_pack(pack)
    report = library.import_pack(entries)

    assert report.added == ('"Good Clause"',)
    assert report.invalid == ('"Bad Kind"', '"Undeclared"')
    assert 'unknown kind "percentage"' in entries[1].error
    assert '"Bad Kind"' in entries[1].error
    assert 'placeholder "{who}"' in entries[2].error
    written = sorted(path.name for path in library.user_folder.iterdir())
    assert written == ["good.toml"]
    assert "Not imported because invalid" in report.summary()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param('title = "x', "not valid TOML", id="syntax"),
        pytest.param('title = "x"\n', "not a kl3m-desk template pack", id="no-header"),
        pytest.param(
            '[pack]\nformat = "kl3m-desk template pack"\nversion = 9\n', "version 9", id="version"
        ),
        pytest.param(
            '[pack]\nformat = "kl3m-desk template pack"\nversion = 1\n',
            "no [[templates]]",
            id="empty",
        ),
    ],
)
def test_unreadable_pack_rejected(
    library: ClauseLibrary, tmp_path: Path, content: str, expected: str
) -> None:
    pack = tmp_path / "broken pack.kl3mpack.toml"
    pack.write_text(content, encoding="utf-8")

    with pytest.raises(LibraryError) as raised:
        library.read_pack(pack)

    assert expected in str(raised.value)
    assert str(pack) in str(raised.value)


# --- typed fields -----------------------------------------------------------------------------


def typed_draft() -> TemplateDraft:
    return TemplateDraft(
        "Closing",
        "Transactions",
        "",
        "On {closing_date} the Buyer shall pay {price} under the laws of {state}. ",
        (
            TemplateField("closing_date", "Closing date", "date", "today", ()),
            TemplateField("price", "Purchase price", "amount", "$0.00", ()),
            TemplateField("state", "Governing state", "choice", "Delaware", US_STATES),
        ),
    )


def test_typed_fields_fill(library: ClauseLibrary) -> None:
    template = library.create(typed_draft())
    today = date(2027, 1, 5)

    filled = template.fill(
        {"closing_date": "2027-03-09", "price": "1250000", "state": "New York"}, today=today
    )
    defaults = template.fill({}, today=today)

    assert filled == (
        "On March 9, 2027 the Buyer shall pay $1,250,000.00 under the laws of New York. "
    )
    assert defaults == "On January 5, 2027 the Buyer shall pay $0.00 under the laws of Delaware. "
    saved = tomllib.loads(template.source.read_text(encoding="utf-8"))
    assert saved["fields"][2]["choices"] == "us_states"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("$1,250,000", Decimal("1250000")),
        ("1250000.5", Decimal("1250000.5")),
        ("USD 12.34", Decimal("12.34")),
        (" $0 ", Decimal("0")),
    ],
)
def test_parse_amount_accepts(typed: str, expected: Decimal) -> None:
    assert parse_amount(typed) == expected


@pytest.mark.parametrize("typed", ["12,34", "1.005", "-5", "ten", "1e6", "$", "1,2345"])
def test_parse_amount_rejects(typed: str) -> None:
    with pytest.raises(ValueError, match=r"amount|negative"):
        parse_amount(typed)


def test_amount_and_date_formatting() -> None:
    assert format_amount(Decimal("1250000")) == "$1,250,000.00"
    assert format_amount(Decimal("0.5")) == "$0.50"
    assert format_us_date(date(2027, 1, 5)) == "January 5, 2027"
    assert format_us_date(date(2030, 12, 31)) == "December 31, 2030"


def test_bad_typed_values_name_field(library: ClauseLibrary) -> None:
    template = library.create(typed_draft())

    with pytest.raises(TemplateFieldError) as amount_error:
        template.fill({"price": "12 dollars"})
    with pytest.raises(TemplateFieldError) as date_error:
        template.fill({"closing_date": "2027-02-30"})
    with pytest.raises(TemplateFieldError) as choice_error:
        template.fill({"state": "Ontario"})

    assert '"Purchase price" (price)' in str(amount_error.value)
    assert '"12 dollars"' in str(amount_error.value)
    assert '"Closing date" (closing_date)' in str(date_error.value)
    assert '"2027-02-30"' in str(date_error.value)
    assert '"Ontario"' in str(choice_error.value)


@pytest.mark.parametrize(
    ("words", "name", "kind", "default"),
    [
        ("March 1, 2027", "date", "date", "2027-03-01"),
        ("$250,000", "amount", "amount", "$250,000.00"),
        ("thirty (30) days", "thirty_30_days", "text", "thirty (30) days"),
        ("30", "field_30", "text", "30"),
    ],
)
def test_field_from_words_gets_kind(words: str, name: str, kind: str, default: str) -> None:
    text = f"Payment is due {words} after notice. "
    start = text.index(words)

    suggested = field_name_for(words, [])
    new_text, field = make_field(text, start, start + len(words), suggested)

    assert suggested == name
    assert field.kind == kind
    assert field.default == default
    assert new_text == "Payment is due {" + name + "} after notice. "


def test_date_default_in_us_form(library: ClauseLibrary) -> None:
    field = TemplateField("delivery_date", "Delivery date", "date", "March 1, 2027", ())
    draft = TemplateDraft("Delivery", "Other", "", "Delivery is due on {delivery_date}. ", (field,))

    template = library.create(draft)

    assert template.fields[0].default == "2027-03-01"
    assert template.fill({}) == "Delivery is due on March 1, 2027. "


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (TemplateField("when", "When", "date", "next week", ()), 'default "next week"'),
        (TemplateField("fee", "Fee", "amount", "lots", ()), 'default "lots"'),
        (TemplateField("fee", "Fee", "percentage", "", ()), 'unknown kind "percentage"'),
    ],
)
def test_invalid_typed_default_rejected(
    library: ClauseLibrary, field: TemplateField, expected: str
) -> None:
    draft = TemplateDraft("Typed", "Other", "", "{" + field.name + "}. ", (field,))

    with pytest.raises(TemplateError, match=expected):
        library.create(draft)

    assert not library.user_folder.exists() or not any(library.user_folder.iterdir())


# --- broken files -----------------------------------------------------------------------------


def test_broken_user_files_skipped_by_name(library: ClauseLibrary) -> None:
    library.create(party_draft())
    folder = library.user_folder
    broken = {
        "syntax error.toml": 'title = "Unclosed\n',
        "unknown kind.toml": 'title = "T"\ntext = "{x}. "\n[[fields]]\nname = "x"\n'
        'label = "X"\nkind = "percentage"\n',
        "undeclared.toml": 'title = "T"\ntext = "{who} agrees. "\n',
    }
    for name, content in broken.items():
        (folder / name).write_text(content, encoding="utf-8")

    loaded = library.reload()

    messages = [str(error) for error in loaded.errors]
    assert len(messages) == 3
    for name in broken:
        assert any(str(folder / name) in message for message in messages)
    assert "non_compete" in [template.id for template in loaded.templates]
    builtin_count = len(load_library([resource_path("templates")]).templates)
    assert len(loaded.templates) == builtin_count + 1


# --- values remembered per document -----------------------------------------------------------


def test_field_values_survive_records_file(tmp_path: Path) -> None:
    path = tmp_path / SPACED_HOME / "contrat signé.txt.kl3m.json"
    path.parent.mkdir(parents=True)
    review_file = ReviewFile.for_text("Text.", [])
    review_file.field_values = {"state": "Texas", "company": "Acme Café LLC"}

    write_review_file(path, review_file, "contrat signé.txt")
    loaded = read_review_file(path)

    assert loaded.field_values == {"company": "Acme Café LLC", "state": "Texas"}
