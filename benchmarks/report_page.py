"""Sections of docs/benchmarks.md that each benchmark script owns.

Every script writes its figures between its own pair of HTML comment markers and leaves the rest
of the page as it was, so running one benchmark never erases another's figures.
"""

from __future__ import annotations

from pathlib import Path

PAGE_TITLE = "# Benchmarks\n"


def section_markers(name: str) -> tuple[str, str]:
    """Return the comment lines that open and close section `name`."""
    return f"<!-- section {name}: begin -->", f"<!-- section {name}: end -->"


def replace_section(page: Path, name: str, body: str) -> None:
    """Write `body` as section `name` of `page`, keeping every other section unchanged.

    A page without that section gets it at its end, and a missing page is created. Raises
    ValueError when the page has only one of the section's two markers, because then the end of
    the old figures is unknown.
    """
    begin, end = section_markers(name)
    block = f"{begin}\n{body.strip()}\n{end}\n"
    old = page.read_text(encoding="utf-8") if page.is_file() else PAGE_TITLE
    begin_at = old.find(begin)
    end_at = old.find(end)
    if begin_at == -1 and end_at == -1:
        new = old.rstrip("\n") + "\n\n" + block
    elif begin_at == -1 or end_at < begin_at:
        raise ValueError(
            f"{page} has a broken {name!r} section: fix or remove its markers "
            f"{begin!r} and {end!r}, then run the benchmark again."
        )
    else:
        after = old[end_at + len(end) :].lstrip("\n")
        new = old[:begin_at] + block + ("\n" + after if after else "")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(new, encoding="utf-8")
