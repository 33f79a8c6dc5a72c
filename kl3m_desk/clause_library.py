"""The clause library: built-in templates plus the user's own, and template packs to share them.

The user's templates are TOML files in `data_dir()/templates`, one per template, named by a slug
of the title (`non_compete.toml`). A user file with the same name as a built-in template
overrides it: editing or renaming a built-in template writes such a file, and deleting the
override brings the built-in template back. Built-in templates themselves cannot be deleted.

A template pack is one TOML file (`*.kl3mpack.toml`) that a colleague can share:

    [pack]
    format = "kl3m-desk template pack"
    version = 1
    exported_at = "2027-01-05T14:30:00+00:00"

    [[templates]]
    id = "non_compete"          # the template's file name without .toml
    title = "Non-Compete"       # then the keys of a template file, fields included
    ...

Importing checks every entry on its own, so an invalid entry is named and skipped while the others
are imported, and nothing of the invalid one is written. Every write goes through a temporary
file and a rename, so a crash never leaves half a template file.

Nothing here imports Qt.
"""

from __future__ import annotations

import logging
import re
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import tomli_w

from kl3m_desk import paths
from kl3m_desk.resources import resource_path
from kl3m_desk.review import utc_timestamp
from kl3m_desk.settings import write_text_atomically
from kl3m_desk.templates import (
    AMOUNT_KIND,
    DATE_KIND,
    TEXT_KIND,
    ClauseTemplate,
    TemplateError,
    TemplateField,
    TemplateLibrary,
    format_amount,
    load_library,
    parse_amount,
    parse_date,
    template_data,
    template_from_data,
    template_to_toml,
)

logger = logging.getLogger(__name__)

PACK_FORMAT = "kl3m-desk template pack"
PACK_VERSION = 1
PACK_SUFFIX = ".kl3mpack.toml"

_MAX_SLUG_LENGTH = 60
# Names that Windows reserves for devices, whatever the extension, so no file may be named so.
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{device}{number}" for device in ("com", "lpt") for number in range(1, 10)
}


class LibraryError(Exception):
    """A library change that cannot be made. The message names the template and what to do."""


class Origin(Enum):
    """The origin of a template in the library: built in, the user's own, or an override."""

    BUILT_IN = "built-in"
    USER = "yours"
    OVERRIDE = "yours, replaces a built-in template"


class Resolution(Enum):
    """The action an import takes for a pack entry whose id is already in the library."""

    REPLACE = "replace"
    KEEP_BOTH = "keep both"
    SKIP = "skip"


@dataclass(frozen=True)
class TemplateDraft:
    """The editable parts of a template, as the user enters them."""

    title: str
    category: str
    description: str
    text: str
    fields: tuple[TemplateField, ...]

    @classmethod
    def of(cls, template: ClauseTemplate) -> TemplateDraft:
        """Return the editable parts of `template`."""
        return cls(
            template.title, template.category, template.description, template.text, template.fields
        )


@dataclass(frozen=True)
class PackEntry:
    """One entry of a pack: its template, or the reason it cannot be imported."""

    name: str  # the entry's title, or "entry N" when it has none
    template: ClauseTemplate | None
    error: str = ""
    conflict: ClauseTemplate | None = None  # the library's template with the same id
    unchanged: bool = False  # the library already has exactly this template


@dataclass(frozen=True)
class ImportReport:
    """The outcome of an import: one line per entry, by the entry's title."""

    added: tuple[str, ...]
    replaced: tuple[str, ...]
    kept_both: tuple[str, ...]
    skipped: tuple[str, ...]
    unchanged: tuple[str, ...]
    invalid: tuple[str, ...]

    def summary(self) -> str:
        """Return the report as sentences for the user."""
        parts = []
        for names, verb in (
            (self.added, "Added"),
            (self.replaced, "Replaced"),
            (self.kept_both, "Added as a copy beside the existing template"),
            (self.skipped, "Skipped"),
            (self.unchanged, "Already in the library"),
            (self.invalid, "Not imported because invalid"),
        ):
            if names:
                parts.append(f"{verb}: {', '.join(names)}.")
        return " ".join(parts) or "The pack contains no templates."


def default_user_folder() -> Path:
    """Return the folder of the user's own templates."""
    return paths.data_dir() / "templates"


def slugify(title: str) -> str:
    """Return a file-name stem for `title`: lowercase ASCII letters, digits and underscores."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_title.casefold()).strip("_")[:_MAX_SLUG_LENGTH]
    slug = slug.strip("_") or "template"
    if slug in _WINDOWS_RESERVED:
        slug = f"{slug}_clause"
    return slug


def escape_braces(text: str) -> str:
    """Return `text` with its braces doubled, so template text shows them literally."""
    return text.replace("{", "{{").replace("}", "}}")


def make_field(
    text: str, start: int, end: int, name: str, label: str = ""
) -> tuple[str, TemplateField]:
    """Turn the words `text[start:end]` of a template text into the field `name`.

    Returns the new text, with `{name}` in place of the words, and a field whose default is the
    words and whose label is `label` or the words. Words that read as a date ("March 1, 2027")
    or a dollar amount ("$250,000") give a date or amount field. Raises LibraryError when the
    name is not an identifier or the range is empty or cuts through a placeholder.
    """
    words = text[start:end].strip()
    if not words or start < 0 or end > len(text) or start >= end:
        raise LibraryError("Select the words to turn into a field first.")
    if not name.isidentifier():
        raise LibraryError(
            f'The field name "{name}" is not valid. Use letters, digits and underscores, not '
            "starting with a digit."
        )
    if "{" in text[start:end] or "}" in text[start:end]:
        raise LibraryError(
            "The selected words contain a brace or a field. Select plain words only."
        )
    kind, default = typed_value(words)
    field = TemplateField(name=name, label=label or words, kind=kind, default=default, choices=())
    return text[:start] + "{" + name + "}" + text[end:], field


def typed_value(words: str) -> tuple[str, str]:
    """Return the field kind that `words` read as, and the words as that kind's default."""
    try:
        return DATE_KIND, parse_date(words).isoformat()
    except ValueError:
        pass
    # Bare numbers are more often counts of days or sections than sums of money.
    if "$" in words or words.strip().upper().startswith("USD"):
        try:
            return AMOUNT_KIND, format_amount(parse_amount(words))
        except ValueError:
            pass
    return TEXT_KIND, words


def field_name_for(words: str, taken: Sequence[str]) -> str:
    """Return an identifier made from `words` that is not in `taken`, such as "party_name_2".

    A date or an amount is named after its kind ("date", "amount_2"), not after its digits.
    """
    kind, _default = typed_value(words)
    base = kind if kind in (DATE_KIND, AMOUNT_KIND) else slugify(words)
    if base[0].isdigit():
        base = f"field_{base}"
    name = base
    number = 2
    while name in taken:
        name = f"{base}_{number}"
        number += 1
    return name


def draft_from_selection(selection: str, title: str = "", category: str = "") -> TemplateDraft:
    """Return a new template draft whose text is the selected document text.

    Qt's paragraph separators become newlines, and braces are doubled so they stay literal text.
    The user then gives the title and category and can turn words into fields (`make_field`).
    """
    text = selection.replace("\u2029", "\n").replace("\u2028", "\n").replace("\r\n", "\n")
    if not text.strip():
        raise LibraryError("Select the clause text in the document first.")
    return TemplateDraft(title, category, "", escape_braces(text.lstrip("\n")), ())


class ClauseLibrary:
    """The built-in template folder and the user's, with the changes the user can make.

    `templates` and `errors` are those of the last `reload`. Every change reloads.
    """

    def __init__(self, builtin_folder: Path, user_folder: Path) -> None:
        self.builtin_folder = builtin_folder
        self.user_folder = user_folder
        self.library = TemplateLibrary(templates=(), errors=())
        self._builtin_ids: frozenset[str] = frozenset()
        self.reload()

    @classmethod
    def default(cls) -> ClauseLibrary:
        """Return the library of the app's built-in templates and the user's data folder."""
        return cls(resource_path("templates"), default_user_folder())

    # --- reading ---------------------------------------------------------------------------

    def reload(self) -> TemplateLibrary:
        """Read both folders again and return the library."""
        builtin = load_library([self.builtin_folder])
        self._builtin_ids = frozenset(template.id for template in builtin.templates)
        self.library = load_library([self.builtin_folder, self.user_folder])
        return self.library

    @property
    def templates(self) -> tuple[ClauseTemplate, ...]:
        """The usable templates, sorted by category then title."""
        return self.library.templates

    @property
    def errors(self) -> tuple[TemplateError, ...]:
        """One error per template file that was skipped, naming the file."""
        return self.library.errors

    def get(self, template_id: str) -> ClauseTemplate:
        """Return the template with `template_id`, raising LibraryError when there is none."""
        for template in self.templates:
            if template.id == template_id:
                return template
        raise LibraryError(f'The clause library has no template "{template_id}".')

    def origin(self, template: ClauseTemplate) -> Origin:
        """Return whether `template` is built in, the user's own, or the user's override."""
        if template.source.parent != self.user_folder:
            return Origin.BUILT_IN
        return Origin.OVERRIDE if template.id in self._builtin_ids else Origin.USER

    def search(self, query: str) -> list[ClauseTemplate]:
        """Return the templates whose title, category, description or text contain `query`.

        The match ignores case, and every word of `query` must occur somewhere.
        """
        words = query.casefold().split()
        found = []
        for template in self.templates:
            haystack = " ".join(
                (template.title, template.category, template.description, template.text)
            ).casefold()
            if all(word in haystack for word in words):
                found.append(template)
        return found

    def by_category(self, query: str = "") -> list[tuple[str, list[ClauseTemplate]]]:
        """Return the templates matching `query`, grouped by category in display order."""
        groups: dict[str, list[ClauseTemplate]] = {}
        for template in self.search(query):
            groups.setdefault(template.category, []).append(template)
        return list(groups.items())

    # --- changes ---------------------------------------------------------------------------

    def create(self, draft: TemplateDraft) -> ClauseTemplate:
        """Save `draft` as a new user template named by a unique slug of its title."""
        template_id = self._unique_id(slugify(draft.title))
        return self._write(template_id, draft)

    def update(self, template_id: str, draft: TemplateDraft) -> ClauseTemplate:
        """Save `draft` over the template `template_id`.

        A built-in template gets a user file with its id, which overrides it. A user template
        whose title changes moves to a file named by a slug of the new title.
        """
        template = self.get(template_id)
        new_id = template_id
        if self.origin(template) is Origin.USER and draft.title.strip() != template.title:
            new_id = self._unique_id(slugify(draft.title), ignore=template_id)
        saved = self._write(new_id, draft)
        if new_id != template_id:
            # The new file is complete before the old one goes, so a failure here leaves both.
            self._user_path(template_id).unlink(missing_ok=True)
            logger.info("Renamed clause template %s to %s", template_id, new_id)
            self.reload()
            saved = self.get(new_id)
        return saved

    def rename(self, template_id: str, title: str) -> ClauseTemplate:
        """Give the template `template_id` a new title, and a user template a new file name."""
        if not title.strip():
            raise LibraryError("A template needs a title. Enter one.")
        draft = replace(TemplateDraft.of(self.get(template_id)), title=title.strip())
        return self.update(template_id, draft)

    def delete(self, template_id: str) -> ClauseTemplate | None:
        """Delete the user's template `template_id`.

        Deleting an override brings back the built-in template, which is returned. Built-in
        templates cannot be deleted: for one of them, LibraryError is raised.
        """
        template = self.get(template_id)
        origin = self.origin(template)
        if origin is Origin.BUILT_IN:
            raise LibraryError(
                f'"{template.title}" is a built-in template and cannot be deleted. '
                "Edit it to make your own version instead."
            )
        try:
            template.source.unlink()
        except OSError as exc:
            raise LibraryError(
                f'The template "{template.title}" could not be deleted from {template.source}: '
                f"{exc.strerror or exc}. Check the folder's permissions."
            ) from exc
        logger.info("Deleted clause template %s (%s)", template_id, template.source)
        self.reload()
        return self.get(template_id) if origin is Origin.OVERRIDE else None

    # --- packs -----------------------------------------------------------------------------

    def export_pack(self, template_ids: Sequence[str], path: Path) -> int:
        """Write the templates `template_ids` to the pack file `path`, returning their number."""
        if not template_ids:
            raise LibraryError("Select at least one template to export.")
        entries = []
        for template_id in template_ids:
            template = self.get(template_id)
            entries.append({"id": template.id, **template_data(template)})
        pack = {
            "pack": {
                "format": PACK_FORMAT,
                "version": PACK_VERSION,
                "exported_at": utc_timestamp(),
            },
            "templates": entries,
        }
        try:
            write_text_atomically(path, tomli_w.dumps(pack, multiline_strings=True))
        except OSError as exc:
            raise LibraryError(
                f"The template pack could not be written to {path}: {exc.strerror or exc}. "
                "Choose another folder."
            ) from exc
        logger.info("Exported %d clause templates to %s", len(entries), path)
        return len(entries)

    def read_pack(self, path: Path) -> list[PackEntry]:
        """Read the pack `path` and check each entry against the library.

        Raises LibraryError when the file is not a readable pack at all. An invalid entry comes
        back with its error instead of a template.
        """
        data = _read_pack_file(path)
        raw_entries = data.get("templates")
        if not isinstance(raw_entries, list):
            raise LibraryError(
                f"The template pack {path} has no [[templates]] entries. Choose a pack file "
                "exported by kl3m-desk."
            )

        by_id = {template.id: template for template in self.templates}
        entries = []
        for number, raw in enumerate(raw_entries, start=1):
            entries.append(self._read_entry(path, number, raw, by_id))
        return entries

    def import_pack(
        self, entries: Sequence[PackEntry], resolutions: Mapping[str, Resolution] | None = None
    ) -> ImportReport:
        """Write the valid entries of a read pack into the user's folder.

        `resolutions` maps the id of a conflicting entry to what to do with it. A conflict
        without one is skipped, and an entry identical to the library's template is skipped.
        """
        resolutions = resolutions or {}
        added: list[str] = []
        replaced: list[str] = []
        kept_both: list[str] = []
        skipped: list[str] = []
        unchanged: list[str] = []
        invalid: list[str] = []
        for entry in entries:
            template = entry.template
            if template is None:
                invalid.append(entry.name)
                continue
            draft = TemplateDraft.of(template)
            if entry.unchanged:
                unchanged.append(entry.name)
            elif entry.conflict is None:
                self._write(self._unique_id(template.id), draft)
                added.append(entry.name)
            else:
                resolution = resolutions.get(template.id, Resolution.SKIP)
                if resolution is Resolution.REPLACE:
                    self._write(template.id, draft)
                    replaced.append(entry.name)
                elif resolution is Resolution.KEEP_BOTH:
                    copy = replace(draft, title=self._unique_title(draft.title))
                    self._write(self._unique_id(slugify(copy.title)), copy)
                    kept_both.append(entry.name)
                else:
                    skipped.append(entry.name)
        report = ImportReport(
            tuple(added),
            tuple(replaced),
            tuple(kept_both),
            tuple(skipped),
            tuple(unchanged),
            tuple(invalid),
        )
        logger.info("Imported a template pack: %s", report.summary())
        return report

    # --- helpers ---------------------------------------------------------------------------

    def _read_entry(
        self, path: Path, number: int, raw: object, by_id: Mapping[str, ClauseTemplate]
    ) -> PackEntry:
        name = f"entry {number}"
        if not isinstance(raw, dict):
            return PackEntry(name, None, f"{name} of {path.name} is not a table.")
        title = raw.get("title")
        if isinstance(title, str) and title.strip():
            name = f'"{title.strip()}"'
        table = dict(raw)
        raw_id = table.pop("id", None)
        template_id = raw_id if isinstance(raw_id, str) and raw_id.strip() else ""
        template_id = slugify(template_id or (title if isinstance(title, str) else ""))
        described = f"{name} (entry {number} of {path})" if name[0] == '"' else f"{name} of {path}"
        try:
            template = template_from_data(
                table, template_id=template_id, source=path, described=described
            )
        except TemplateError as error:
            return PackEntry(name, None, str(error))
        conflict = by_id.get(template_id)
        unchanged = conflict is not None and template_data(conflict) == template_data(template)
        return PackEntry(name, template, conflict=conflict, unchanged=unchanged)

    def _user_path(self, template_id: str) -> Path:
        return self.user_folder / f"{template_id}.toml"

    def _taken_ids(self) -> set[str]:
        """Return the casefolded stems of every template file, broken ones included."""
        taken = {template.id.casefold() for template in self.templates}
        for folder in (self.builtin_folder, self.user_folder):
            if folder.is_dir():
                taken.update(path.stem.casefold() for path in folder.glob("*.toml"))
        return taken

    def _unique_id(self, base: str, ignore: str = "") -> str:
        # Compared without case, because macOS and Windows file names ignore case.
        taken = self._taken_ids() - {ignore.casefold()}
        candidate = base
        number = 2
        while candidate.casefold() in taken:
            candidate = f"{base}_{number}"
            number += 1
        return candidate

    def _unique_title(self, title: str) -> str:
        titles = {template.title.casefold() for template in self.templates}
        number = 2
        candidate = f"{title} ({number})"
        while candidate.casefold() in titles:
            number += 1
            candidate = f"{title} ({number})"
        return candidate

    def _write(self, template_id: str, draft: TemplateDraft) -> ClauseTemplate:
        """Check `draft` and write it as the user file of `template_id`, then reload."""
        path = self._user_path(template_id)
        title = draft.title.strip() or "Untitled"
        checked = template_from_data(
            template_data(
                ClauseTemplate(
                    id=template_id,
                    title=title,
                    category=draft.category,
                    description=draft.description,
                    text=draft.text,
                    fields=draft.fields,
                    source=path,
                )
            ),
            template_id=template_id,
            source=path,
            described=f'"{title}"',
        )
        try:
            write_text_atomically(path, template_to_toml(checked))
        except OSError as exc:
            raise LibraryError(
                f'The template "{title}" could not be saved to {path}: {exc.strerror or exc}. '
                "Check that the folder is writable."
            ) from exc
        logger.info("Saved clause template %s to %s", template_id, path)
        self.reload()
        return self.get(template_id)


def _read_pack_file(path: Path) -> dict[str, Any]:
    try:
        source = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise LibraryError(
            f"The template pack {path} could not be read: {exc.strerror or exc}."
        ) from exc
    except UnicodeDecodeError as exc:
        raise LibraryError(
            f"The template pack {path} is not a UTF-8 text file. Choose a {PACK_SUFFIX} file."
        ) from exc
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise LibraryError(
            f"The template pack {path} is not valid TOML ({exc}), so nothing was imported."
        ) from exc

    header = data.get("pack")
    if not isinstance(header, dict) or header.get("format") != PACK_FORMAT:
        raise LibraryError(
            f"The file {path} is not a kl3m-desk template pack: its [pack] table with format = "
            f'"{PACK_FORMAT}" is missing.'
        )
    if header.get("version") != PACK_VERSION:
        raise LibraryError(
            f"The template pack {path} has version {header.get('version')!r}, but this "
            f"kl3m-desk reads version {PACK_VERSION}. Update kl3m-desk to import it."
        )
    return data
