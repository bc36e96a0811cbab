"""PDF ingestion on PDFs written here with fpdf2 and on real-world files from py-pdf/sample-files."""

import io
import re
from pathlib import Path

import pytest
from fpdf import FPDF
from fpdf.enums import EncryptionMethod
from pypdf import PdfWriter

from megadoc.pipeline.ingest import IngestError, load_document
from tests.helpers import DATA, SHARED_DATA, assert_one_line_error, austen_paragraphs, run_cli, write_pdf

SAMPLES = DATA / "pdfs"
SHARED_PDFS = SHARED_DATA / "pdfs"


def _write_pdf(path: Path, pages: list[str | None], *, sections: bool = False, **encryption) -> Path:
    """One page per item: its text, or None for a blank page."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for number, text in enumerate(pages, start=1):
        pdf.add_page()
        if sections:
            pdf.start_section(f"Chapter {number}")
        if text is not None:
            pdf.multi_cell(0, 6, text)
    if encryption:
        pdf.set_encryption(**encryption)
    pdf.output(str(path))
    return path


def _assert_one_line(error: pytest.ExceptionInfo, path: Path, phrase: str) -> None:
    message = str(error.value)
    assert "\n" not in message and path.name in message and phrase in message, message


def test_every_span_maps_to_its_page(tmp_path):
    pages = [f"Page {n} tells of whale number {n}. " * 30 for n in range(1, 6)]
    doc = load_document(_write_pdf(tmp_path / "book.pdf", pages))
    assert doc.kind == "pdf" and doc.warnings == []
    assert [s.page for s in doc.segments] == [1, 2, 3, 4, 5]
    for number in range(1, 6):
        offset = doc.text.index(f"whale number {number}.")
        assert doc.segment_at(offset).page == number
        assert doc.locate(offset, offset + 20) == f"p. {number}"
    span_start = doc.text.index("whale number 2.")
    span_end = doc.text.index("whale number 3.") + 5
    assert doc.locate(span_start, span_end) == "pp. 2-3"


def test_outline_titles_become_chapters(tmp_path):
    doc = load_document(_write_pdf(tmp_path / "outlined.pdf", ["One.", "Two.", "Three."], sections=True))
    assert [s.chapter for s in doc.segments] == ["Chapter 1", "Chapter 2", "Chapter 3"]


def test_blank_pages_are_a_scanned_pdf(tmp_path):
    path = _write_pdf(tmp_path / "blank.pdf", [None, None, None])
    with pytest.raises(IngestError) as error:
        load_document(path)
    _assert_one_line(error, path, "no extractable text on any of 3 pages (scanned PDF? run OCR first)")


def test_images_only_is_a_scanned_pdf(tmp_path):
    from PIL import Image

    image = tmp_path / "scan.png"
    Image.new("RGB", (200, 100), "gray").save(image)
    pdf = FPDF()
    pdf.add_page()
    pdf.image(str(image), x=10, y=10, w=100)
    path = tmp_path / "scan.pdf"
    pdf.output(str(path))
    with pytest.raises(IngestError) as error:
        load_document(path)
    _assert_one_line(error, path, "no extractable text on its only page")


def test_mostly_blank_pdf_loads_with_a_warning(tmp_path):
    doc = load_document(_write_pdf(tmp_path / "sparse.pdf", ["Only text here."] + [None] * 9))
    assert doc.text == "Only text here."
    assert len(doc.warnings) == 1 and "9 of 10 pages have no extractable text" in doc.warnings[0]


def test_aes_encrypted_pdf(tmp_path):
    path = _write_pdf(
        tmp_path / "secret.pdf",
        ["Classified café."],
        owner_password="owner",
        user_password="sesame",
        encryption_method=EncryptionMethod.AES_256,
    )
    assert load_document(path, password="sesame").text == "Classified café."
    with pytest.raises(IngestError) as error:
        load_document(path)
    _assert_one_line(error, path, "is encrypted; pass its password with --password")
    with pytest.raises(IngestError) as error:
        load_document(path, password="guess")
    _assert_one_line(error, path, "wrong password")


def test_real_password_protected_pdf():
    path = SAMPLES / "libreoffice-writer-password.pdf"
    with pytest.raises(IngestError) as error:
        load_document(path)
    _assert_one_line(error, path, "is encrypted; pass its password with --password")
    doc = load_document(path, password="openpassword")
    assert doc.text.startswith("Lorem ipsum dolor sit amet")


def test_real_pdfs_give_text_with_pages():
    doc = load_document(SAMPLES / "minimal-document.pdf")
    assert len(doc.text) > 500 and [s.page for s in doc.segments] == [1]
    doc = load_document(SAMPLES / "pdflatex-4-pages.pdf")
    assert [s.page for s in doc.segments] == [1, 2, 3, 4] and len(doc.text) > 14_000
    assert all(doc.segment_at(s.start).page == s.page for s in doc.segments)


def test_real_outline_names_pages():
    doc = load_document(SAMPLES / "pdflatex-outline.pdf")
    assert [(s.page, s.chapter) for s in doc.segments] == [(1, None), (2, "Foo"), (3, "Bar"), (4, "Bar")]


def test_two_columns_in_reading_order():
    doc = load_document(SAMPLES / "multicolumn.pdf")
    assert "filled" in doc.text and "\ufb01" not in doc.text  # the "fi" ligature spelled out
    assert doc.text.index("Two-Column Document") < doc.text.index("Nam dui ligula")


def test_right_to_left_text_is_kept():
    doc = load_document(SAMPLES / "habibi.pdf")
    assert "habibi" in doc.text and "حَبيبي" in doc.text
    assert doc.title == "habibi"


def test_images_with_a_little_text_load_with_a_warning():
    doc = load_document(SAMPLES / "imagemagick-images.pdf")
    assert "Background" in doc.text and [s.page for s in doc.segments] == [1, 2, 3, 6]
    assert any("2 of 6 pages have no extractable text" in w for w in doc.warnings)
    assert doc.title == "imagemagick-images"  # NUL byte of the metadata dropped


def test_unreadable_pdf_is_one_line_and_quiet(capfd):
    path = SHARED_PDFS / "unreadablemetadata.pdf"
    if not path.exists():
        pytest.skip(f"{path} absent (shared data not mounted)")
    with pytest.raises(IngestError) as error:
        load_document(path)
    _assert_one_line(error, path, "cannot read this PDF (Invalid object in /Pages)")
    assert capfd.readouterr().err == ""  # pypdf's repair log is captured, not printed


def test_truncated_pdf(tmp_path):
    whole = _write_pdf(tmp_path / "whole.pdf", ["Some text. " * 50]).read_bytes()
    path = tmp_path / "truncated.pdf"
    path.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(IngestError) as error:
        load_document(path)
    _assert_one_line(error, path, "truncated.pdf")


def test_garbage_with_a_pdf_header(tmp_path):
    path = tmp_path / "junk.pdf"
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20)
    with pytest.raises(IngestError) as error:
        load_document(path)
    _assert_one_line(error, path, "cannot read this PDF")


def _cut_off_book(tmp_path: Path, fraction: float) -> Path:
    """A six-page PDF as pypdf writes it (fonts beside each page), cut off at `fraction` of its bytes."""
    written = io.BytesIO()
    PdfWriter(clone_from=write_pdf(tmp_path / "full.pdf", austen_paragraphs(6))).write(written)
    path = tmp_path / "cut.pdf"
    path.write_bytes(written.getvalue()[: int(len(written.getvalue()) * fraction)])
    return path


def test_a_truncated_pdf_reads_the_pages_that_survive_and_names_the_rest(tmp_path):
    doc = load_document(_cut_off_book(tmp_path, 0.5))
    read = sorted({s.page for s in doc.segments})
    [warning] = doc.warnings
    assert read and f"read {len(read)} of 6 pages" in warning and "cut off" in warning
    named = re.search(r"pp?\. ([\d, -]+) could not be read", warning).group(1)
    lost = {n for part in named.split(", ") for n in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)}
    assert lost.isdisjoint(read) and lost | set(read) == set(range(1, 7))


def test_a_truncated_pdf_through_ask_warns_and_answers(app_env, tiny_model_dir, tmp_path):
    path = _cut_off_book(tmp_path, 0.5)
    result = run_cli("ask", path, "Who is Anne?", "--model", tiny_model_dir, "--device", "cpu", "--max-tokens", "4")
    assert result.exit_code == 0, result.stderr
    assert "warning: " in result.stderr and "cut off" in result.stderr and "could not be read" in result.stderr


def test_a_cut_off_pdf_whose_text_cannot_be_decoded_is_one_error(app_env, tiny_model_dir, tmp_path):
    """habibi.pdf cut in half keeps its page but loses its font's character map: pypdf extracts only
    U+FFFD. That is no text (it was read as a page of replacement characters, with 'read every page')."""
    data = (SAMPLES / "habibi.pdf").read_bytes()
    path = tmp_path / "habibi.pdf"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match="cut off .* no page's text survives"):
        load_document(path)
    result = run_cli("ask", path, "Who?", "--model", tiny_model_dir, "--device", "cpu")
    assert_one_line_error(result, "no page's text survives")
    assert "\ufffd" not in load_document(SAMPLES / "habibi.pdf").text
