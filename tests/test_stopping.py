"""Stop options: where the stop rules cut real clause text, the hold-back while text streams in,
stream_completion with a stop option, and `kl3m-desk generate --stop-at`."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from kl3m_desk import cli
from kl3m_desk.engine import KVCache
from kl3m_desk.generation import GenerationResult, build_prompt, stream_completion
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import STOP_AT, SamplingParams
from kl3m_desk.settings import Settings
from kl3m_desk.stopping import STOP_AT_CHOICES, StopAt, StopFilter, cut_completion
from tests.conftest import (
    DOCUMENTS_DIR,
    LEGAL_DIR,
    legal_fixture_paths,
    requires_fixtures,
    requires_tokenizer,
)
from tests.forced_text import force_text

PATENT_INDEMNITY = "03_indemnification_far_52.227-3.txt"
SAFEGUARDS = "04_confidentiality_far_52.239-1.txt"
LIABILITY_CAP = "05_liability_cap_with_indemnity_confidentiality_carveouts_cuad_alliedesports.txt"


def fixture_text(name: str) -> str:
    folder = LEGAL_DIR if (LEGAL_DIR / name).is_file() else DOCUMENTS_DIR
    return (folder / name).read_text(encoding="utf-8")


def split_at(text: str, marker: str, after: bool = True) -> tuple[str, str]:
    """Split `text` into the document before the cursor and the completion, at `marker`."""
    index = text.index(marker) + (len(marker) if after else 0)
    return text[:index], text[index:]


def up_to(completion: str, end: str) -> str:
    """Return `completion` up to and including the first `end`."""
    return completion[: completion.index(end) + len(end)]


# (file, cursor after this text, stop option, the inserted text ends with this text)
FIXTURE_CUTS = [
    # "35 U.S.C. 181)" and '"construction work")' lie inside the sentence.
    (PATENT_INDEMNITY, "(a) The Contractor shall indemnify", "sentence", "or construction work."),
    (PATENT_INDEMNITY, "(b) This indemnity shall", "sentence", "participate in its defense."),
    (PATENT_INDEMNITY, "(b) This indemnity shall", "paragraph", "shall not apply to—"),
    (PATENT_INDEMNITY, "(b) This indemnity shall", "clause", "shall not apply to—"),
    (PATENT_INDEMNITY, "(1) An infringement resulting", "clause", "used by the Contractor;"),
    (SAFEGUARDS, "(a) The Contractor shall not", "clause", "provided by the Government."),
    (SAFEGUARDS, "(b) To the extent", "sentence", "records, and databases."),
    # Neither the clause number "1." nor the run-in heading "GRANT." ends the sentence.
    ("contract_1.txt", "agree as follows:\n\n", "sentence", '("Franchise").'),
    ("contract_1.txt", "agree as follows:\n\n", "clause", "any applicable definitions."),
    # "(Ordinance No. 967)" lies inside the sentence.
    ("contract_1.txt", "The Franchise is", "sentence", "any applicable definitions."),
    ("contract_1.txt", "(a) Grantee shall pay", "clause", "8-K, 12/16/2015"),
    # "3." after a sentence end on the same line starts a clause; "Section 2 of" does not.
    ("contract_2.txt", "2. Non-Competition. ", "clause", "Section 2, mutatis mutandis."),
    ("contract_2.txt", "2. Non-Competition. ", "sentence", "Section 2, mutatis mutandis."),
    # "Section 4 of" after the run-in heading "Non-Solicitation." is a citation.
    ("contract_2.txt", "3. Non-Solicitation.", "clause", '(the "Term")."'),
    ("contract_2.txt", "3. Non-Solicitation.", "paragraph", "replaced with the following:"),
    ("far_part52_excerpt.txt", "(1) Offered or gave", "sentence", "of the Government; and"),
    ("far_part52_excerpt.txt", "(2)(i) Has been", "clause", "offeror’s organization];"),
    ("far_part52_excerpt.txt", "the dis-closure.\n\n", "clause", "(End of provision)"),
    # "Valencia S.A. (an MSL" does not end the sentence.
    ("outsourcing_agreement_long.txt", '1.5   "GMSV" shall', "sentence", "in Spain)."),
    ("outsourcing_agreement_long.txt", "      i)    conflict", "clause", "bylaws of IBM, or"),
    (
        "outsourcing_agreement_long.txt",
        "      Supplement 1 to the Statement",
        "clause",
        "will expire December 31, 1998.",
    ),
    # "U.S." opens the sentence and a no-break space follows its period.
    ("contract_3.txt", "BACKGROUND\n\nThe U.S. General", "sentence", "businesses it serves."),
    ("contract_3.txt", "BACKGROUND\n\n", "clause", "the Requesting Agency."),
    ("contract_3.txt", "1.  Make appropriate", "clause", "(e.g., agile)."),
]


@requires_fixtures
@pytest.mark.parametrize(
    ("name", "marker", "stop_at", "end"),
    FIXTURE_CUTS,
    ids=[f"{name[:12]}-{stop_at}-{marker[-12:]}" for name, marker, stop_at, _ in FIXTURE_CUTS],
)
def test_fixture_cut_position(name: str, marker: str, stop_at: StopAt, end: str) -> None:
    context, completion = split_at(fixture_text(name), marker)
    text, reason = cut_completion(completion, stop_at, context)
    assert text == up_to(completion, end)
    assert reason == stop_at


@requires_fixtures
def test_clause_ignores_cited_sections() -> None:
    # "SECTION 5 OR BREACHES OF SECTION 2 (TRADEMARKS), 8 (CONFIDENTIALITY)" is one sentence.
    text = fixture_text(LIABILITY_CAP)
    assert "SECTION 5" in text
    cut, reason = cut_completion(text, "clause", "")
    assert cut == text
    assert reason is None


@requires_fixtures
def test_clause_skips_inline_enumeration() -> None:
    # "(vi)" follows "(42 U.S.C. § 1320a-7a(a)(5))" inside a sentence; "6." opens a line later.
    text = fixture_text("tricky.txt")
    cut, reason = cut_completion(text, "clause", "")
    assert cut == text[: text.index("6. MARKETING")].rstrip()
    assert "(vi) the civil" in cut
    assert reason == "clause"


def cut_text(completion: str, stop_at: StopAt, context: str = "") -> str:
    return cut_completion(completion, stop_at, context)[0]


# (completion, the sentence stop inserts this)
TRICKY_SENTENCES = [
    ("as set out in Section 3 above. The Buyer", "as set out in Section 3 above."),
    ("paid in U.S. dollars within thirty (30) days. The Buyer", "within thirty (30) days."),
    ("governed by the laws of the U.S. The Buyer", "governed by the laws of the U.S."),
    ("between Acme, Inc. and Beta Corp. for the Term. The Buyer", "for the Term."),
    ("the Supplier is Acme, Inc. The Buyer is Beta.", "the Supplier is Acme, Inc."),
    ("such as encryption (e.g. AES) or hashing. The Buyer", "or hashing."),
    ("reasonable steps, e.g. encryption, apply. The Buyer", "apply."),
    ("under Ordinance No. 5 as amended. The Buyer", "as amended."),
    ("under Amendment No. 5. The Buyer", "under Amendment No. 5."),
    ("signed by Diane L. Conner on that date. The Buyer", "on that date."),
    ("as shown in Exhibit A. The Buyer", "as shown in Exhibit A."),
    ('the "Offeror." The Buyer', 'the "Offeror."'),
    ("is due by 5:00 p.m. Eastern Time. The Buyer", "Eastern Time."),
    ("under 35 U.S.C. 181 and 31 U.S.C. §§ 3729 et seq. The Buyer", "et seq."),
    ("Will the fee apply? The Buyer", "Will the fee apply?"),
    ("is due.\u00a0The Buyer", "is due."),
    ("is due.\nThe Buyer", "is due."),
]


@pytest.mark.parametrize(("completion", "expected"), TRICKY_SENTENCES)
def test_sentence_end_tricky_cases(completion: str, expected: str) -> None:
    assert (
        cut_text(completion, "sentence", "This Agreement is made. The Supplier ")
        == (completion[: completion.index(expected) + len(expected)])
    )


CLAUSE_NUMBERS = [
    "\n\n(b) The Buyer shall",
    "\n(iv) the Buyer shall",
    "\n(2)(i) Has been",
    "\n2. Term.",
    "\n2.1 The Term",
    '\n1.1   "Effective Date" means',
    "\n52.203-3 Gratuities.",
    "\nSection 3 Payment",
    "\nSECTION 3. PAYMENT",
    "\nArticle IV\nTerm",
    "\nARTICLE IV. TERM",
    "\n§ 4 Notices",
    "\n§\u00a04 Notices",
    "\n      iv)   the Buyer",
    "\nB.  Any and all",
    "\n\n### 2.0 SCOPE OF WORK",
    "   3. Non-Solicitation.",
    " (b) This indemnity",
    " Section 4. Notices.",
]


@pytest.mark.parametrize("number", CLAUSE_NUMBERS)
def test_clause_number_forms_stop(number: str) -> None:
    completion = "The Supplier shall pay the Fees." + number + " and more text."
    assert cut_text(completion, "clause") == "The Supplier shall pay the Fees."


NOT_CLAUSE_NUMBERS = [
    "as set out in Section 3 above and in Article IV of the Lease.",
    "The Fees are due.\nSection 4 of the Lease applies.",
    "The terms in\nSection 3 above apply.",
    "The Fees are due. Section 2 shall survive.",
    "INDEMNIFICATION CLAIMS UNDER SECTION 5 OR BREACHES OF SECTION 2 (TRADEMARKS).",
    "a fee of\n2.5 percent of the price.",
    "See paragraphs\n(a)(1) through (a)(3) of this clause.",
    "paid under 35 U.S.C. 181 and (b) This indemnity",
    "as follows: (a) the Fees and (b) the costs.",
    "The Fees are due; (b) the costs are not.",
    "The Fees are due. 30 days later, interest accrues.",
    "The Fees were set in\n2016 and raised in 2017.",
    "under Ordinance No. 5. No further fee applies.",
    "Page 13\n\n1\n\nSource: the filing",
]


@pytest.mark.parametrize("completion", NOT_CLAUSE_NUMBERS)
def test_cited_numbers_do_not_stop(completion: str) -> None:
    text, reason = cut_completion(completion, "clause", "(a) The Supplier ")
    assert text == completion
    assert reason is None


def test_leading_clause_number_kept() -> None:
    context = "(1) An infringement resulting from compliance;\n\n"
    completion = "(2) An infringement resulting from addition;\n\n(3) A claimed infringement"
    assert cut_text(completion, "clause", context) == "(2) An infringement resulting from addition;"
    # The cursor right after the last clause: the line break and number belong to the new clause.
    completion = "\n\n(2) An infringement resulting from addition;\n\n(3) A claimed"
    assert cut_text(completion, "clause", context.rstrip()) == (
        "\n\n(2) An infringement resulting from addition;"
    )


def test_clause_number_at_text_end_cut() -> None:
    text, reason = cut_completion("the Contractor;\n\n(2)", "clause", "(1) Offered to ")
    assert text == "the Contractor;"
    assert reason == "clause"


def test_sentence_end_at_text_end_kept() -> None:
    text, reason = cut_completion("the Contractor shall pay.", "sentence", "(a) ")
    assert text == "the Contractor shall pay."
    assert reason is None


def test_paragraph_follows_document_style() -> None:
    blank_lines = "Title\n\nFirst paragraph.\n\nSecond "
    assert cut_text("line one\nline two\n\nnext", "paragraph", blank_lines) == (
        "line one\nline two"
    )
    single_lines = "Title\nFirst paragraph.\nSecond "
    assert cut_text("line one\nline two", "paragraph", single_lines) == "line one"
    assert cut_text("one\r\n\r\ntwo", "paragraph", blank_lines) == "one"
    # A numbered line starts a new paragraph even without a blank line before it.
    assert cut_text("fees;\n(b) costs", "paragraph", blank_lines) == "fees;"


def test_paragraph_leading_break_kept() -> None:
    completion = "\n\nNext paragraph. Second sentence.\n\nThird paragraph."
    assert cut_text(completion, "paragraph", "First paragraph.") == (
        "\n\nNext paragraph. Second sentence."
    )


def test_list_item_ends_sentence() -> None:
    context = "Title\n\nThe Contractor agrees:\n\n(a) to deliver"
    assert cut_text(" the supplies; and\n(b) to", "sentence", context) == " the supplies; and"
    assert cut_text(" the supplies; provided that it", "sentence", context) == (
        " the supplies; provided that it"
    )


def test_none_passes_text_unchanged() -> None:
    stop_filter = StopFilter("none", "Context.")
    pieces = ["The fee. ", "\n\n(b) Next", "  "]
    assert [stop_filter.push(piece) for piece in pieces] == pieces
    assert stop_filter.finish("") == ""
    assert stop_filter.stop_reason is None


def test_invalid_stop_option_rejected() -> None:
    with pytest.raises(ValueError, match="Invalid stop option 'word'"):
        StopFilter("word")  # type: ignore[arg-type]


def stream_through_filter(
    completion: str, stop_at: StopAt, context: str, generator: random.Random
) -> tuple[list[str], StopFilter, int]:
    """Feed `completion` in random pieces; returns the pieces passed on and the max held back.

    The max counts the non-space characters held back. Whitespace runs of PDF text may be long,
    and each is held back whole until the next word decides it.
    """
    stop_filter = StopFilter(stop_at, context)
    passed: list[str] = []
    position = 0
    max_held = 0
    while position < len(completion) and stop_filter.stop_reason is None:
        size = generator.randint(1, 8)
        passed.append(stop_filter.push(completion[position : position + size]))
        position += size
        held = completion[len("".join(passed)) : position]
        if stop_filter.stop_reason is None:
            max_held = max(max_held, len("".join(held.split())))
    passed.append(stop_filter.finish())
    return passed, stop_filter, max_held


@requires_fixtures
@pytest.mark.parametrize("stop_at", STOP_AT_CHOICES)
def test_streamed_pieces_join_to_cut(stop_at: StopAt) -> None:
    generator = random.Random(7)
    paths = [*legal_fixture_paths(), *sorted(DOCUMENTS_DIR.glob("*.txt"))]
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for _ in range(12):
            start = generator.randrange(len(text))
            context, completion = text[:start], text[start : start + 2500]
            expected, reason = cut_completion(completion, stop_at, context)
            passed, stop_filter, max_held = stream_through_filter(
                completion, stop_at, context, generator
            )
            assert "".join(passed) == expected, f"{path.name} at {start}"
            assert stop_filter.stop_reason == reason, f"{path.name} at {start}"
            assert stop_filter.text == expected
            assert max_held <= 40, f"{path.name} at {start}: held {max_held} characters"


def test_cut_keeps_whole_characters() -> None:
    completion = "The fee of €1,200 is payable in 東京 🙂. The Licensee—not the Licensor—shall"
    stop_filter = StopFilter("sentence", "§ 2.1 ")
    passed = [stop_filter.push(character) for character in completion]
    passed.append(stop_filter.finish())
    assert "".join(passed) == "The fee of €1,200 is payable in 東京 🙂."
    assert stop_filter.stop_reason == "sentence"


def test_stop_option_declaration_matches_rules() -> None:
    assert STOP_AT.values == STOP_AT_CHOICES
    assert SamplingParams.defaults().stop_at == "none"
    assert SamplingParams.defaults().replace(stop_at="clause").stop_at == "clause"
    with pytest.raises(ValueError, match="Stop at must be one of none, sentence"):
        SamplingParams.from_mapping({"stop_at": "page"})


def test_stop_option_setting_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    settings = Settings(path=path)
    settings.sampling = SamplingParams.defaults().replace(stop_at="paragraph")
    settings.save()
    assert Settings.load(path).sampling.stop_at == "paragraph"

    path.write_text('{"sampling": {"stop_at": "page", "top_k": 5}}', encoding="utf-8")
    loaded = Settings.load(path)
    assert loaded.sampling.stop_at == "none"
    assert loaded.sampling.top_k == 5
    assert len(loaded.load_warnings) == 2  # the value, then where the copy is kept
    assert "'page'" in loaded.load_warnings[0]
    assert "settings.json.invalid-" in loaded.load_warnings[1]


def run_forced(
    model: LoadedModel,
    monkeypatch: pytest.MonkeyPatch,
    context: str,
    forced: str,
    stop_at: StopAt,
    end_with_eos: bool = False,
    cancel: threading.Event | None = None,
    on_piece: Callable[[str], None] | None = None,
) -> tuple[list[str], GenerationResult, int]:
    """Generate `forced` after `context` with greedy decoding; returns pieces, result, tokens."""
    hook = force_text(monkeypatch, model, forced, end_with_eos)
    sampling = SamplingParams.defaults().replace(
        temperature=0, max_new_tokens=len(hook.target) + 8, stop_at=stop_at
    )
    prompt = build_prompt(model, context, sampling.max_new_tokens)
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if on_piece is not None:
            on_piece(piece)

    result = stream_completion(model, prompt, sampling, on_text, cancel)
    return pieces, result, len(hook.target)


def decode(model: LoadedModel, ids: list[int]) -> str:
    text: str = model.tokenizer.decode(
        ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    return text


@requires_tokenizer
@requires_fixtures
@pytest.mark.parametrize("stop_at", ["sentence", "paragraph", "clause"])
def test_stream_completion_stops_early(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch, stop_at: StopAt
) -> None:
    context, completion = split_at(fixture_text(PATENT_INDEMNITY), "(b) This indemnity shall")
    expected = cut_text(completion, stop_at, context)
    pieces, result, forced_tokens = run_forced(
        tiny_model, monkeypatch, context, completion, stop_at
    )
    assert result.text == expected
    assert "".join(pieces) == result.text
    assert result.stop_reason == stop_at
    assert len(result.token_ids) < forced_tokens
    assert decode(tiny_model, result.token_ids).startswith(result.text)


@requires_tokenizer
def test_stream_cut_after_rare_characters(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    forced = " pay €1,200 in 東京 🙂.\n\n(b) The Licensee—not the Licensor—shall"
    pieces, result, _ = run_forced(
        tiny_model, monkeypatch, "(a) The Licensee shall", forced, "clause"
    )
    assert result.text == " pay €1,200 in 東京 🙂."
    assert "".join(pieces) == result.text
    assert not any("\ufffd" in piece for piece in pieces)
    assert result.stop_reason == "clause"


@requires_tokenizer
def test_stream_eos_cuts_held_number(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    forced = " the Contractor;\n\n(2)"
    pieces, result, _ = run_forced(
        tiny_model, monkeypatch, "(1) Offered to", forced, "clause", end_with_eos=True
    )
    assert result.text == " the Contractor;"
    assert "".join(pieces) == result.text
    assert result.stop_reason == "clause"


@requires_tokenizer
def test_stream_cancel_drops_held_text(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancel = threading.Event()
    received: list[str] = []
    passes_after_period = 0

    def count_passes(original: Callable[[KVCache, Sequence[int]], object]) -> object:
        def forward(cache: KVCache, ids: Sequence[int]) -> object:
            nonlocal passes_after_period
            if "".join(received).endswith("fee."):
                passes_after_period += 1
                if passes_after_period == 3:
                    cancel.set()  # "\n\n(" is held back by then, waiting for "b) The"
            return original(cache, ids)

        return forward

    forced = " shall pay the fee.\n\n(b) The Buyer shall pay the costs."
    hook = force_text(monkeypatch, tiny_model, forced)
    monkeypatch.setattr(tiny_model.engine, "forward", count_passes(hook.forward))
    sampling = SamplingParams.defaults().replace(
        temperature=0, max_new_tokens=len(hook.target), stop_at="clause"
    )
    prompt = build_prompt(tiny_model, "(a) The Buyer", sampling.max_new_tokens)
    result = stream_completion(tiny_model, prompt, sampling, received.append, cancel)
    assert result.stop_reason == "stopped"
    assert "".join(received) == result.text
    assert result.text == " shall pay the fee."
    assert decode(tiny_model, result.token_ids).startswith(" shall pay the fee.\n\n(")


def test_generate_help_lists_stop_at() -> None:
    help_text = cli.build_generate_parser().format_help()
    assert "--stop-at {none,sentence,paragraph,clause}" in help_text


def test_generate_rejects_unknown_stop_at(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--stop-at", "page", "Text"])
    assert exit_info.value.code == 2
    assert "--stop-at: invalid choice: 'page'" in capsys.readouterr().err


@requires_tokenizer
@requires_fixtures
def test_generate_stop_at_clause(
    tiny_model: LoadedModel,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    context, completion = split_at(fixture_text(PATENT_INDEMNITY), "(b) This indemnity shall")
    force_text(monkeypatch, tiny_model, completion)
    monkeypatch.setattr(
        "kl3m_desk.device.load_and_place", lambda *_arguments, **_options: tiny_model
    )
    status = cli.main(
        [
            "generate",
            "--model",
            str(tiny_model_dir),
            "--temperature",
            "0",
            "--max-new-tokens",
            "400",
            "--stop-at",
            "clause",
            context,
        ]
    )
    output = capsys.readouterr()
    assert status == 0, output.err
    assert output.out == cut_text(completion, "clause", context) + "\n"
    assert output.out.rstrip().endswith("shall not apply to—")
    assert "stop: clause" in output.err
