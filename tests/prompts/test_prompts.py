import pytest

from megadoc import prompts

APP_TEMPLATES = {"qa": {"question"}, "summary": set(), "query_summary": {"query"}}
SCROLLS_TEMPLATES = ("scrolls_narrativeqa", "scrolls_qasper", "scrolls_qmsum", "scrolls_squality")


def test_every_task_has_a_template():
    assert set(prompts.names()) == set(APP_TEMPLATES) | set(SCROLLS_TEMPLATES)


@pytest.mark.parametrize("name", sorted(APP_TEMPLATES))
def test_app_templates_put_the_document_first_and_the_rest_after(name):
    before, after = prompts.split(name, **{slot: "SLOT" for slot in APP_TEMPLATES[name]})
    assert before == ""
    assert all(after.count("SLOT") == 1 for _ in APP_TEMPLATES[name])
    assert after.startswith("\n\n")


@pytest.mark.parametrize("name", SCROLLS_TEMPLATES)
def test_scrolls_templates_begin_with_scrolls_input_and_repeat_the_question(name):
    question = "Who wrote the letter?"
    before, after = prompts.split(name, question=question)
    # before + document is exactly SCROLLS' input: question, blank line, document.
    assert before == question + "\n\n"
    assert question in after
    assert prompts.render(name, question=question, document="DOC") == before + "DOC" + after


def test_braces_and_dollars_in_values_are_kept_verbatim():
    document = "A: {vocalsound} okay {0} {question} $document }{"
    text = prompts.render("qa", document=document, question="What {x}?")
    assert text.startswith(document + "\n\n")
    assert "Question: What {x}?" in text


def test_the_final_newline_of_the_file_is_not_part_of_the_template():
    assert prompts.render("summary", document="D").endswith("Summary:")


def test_missing_and_unknown_slots_are_named_in_the_error():
    with pytest.raises(ValueError, match=r"missing \['question'\]"):
        prompts.render("qa", document="D")
    with pytest.raises(ValueError, match=r"unknown \['colour'\]"):
        prompts.render("summary", document="D", colour="red")
    with pytest.raises(ValueError, match="takes no document"):
        prompts.split("summary", document="D")


def test_unknown_template_lists_the_known_ones():
    with pytest.raises(ValueError, match="templates: qa, query_summary"):
        prompts.render("../pyproject")


def test_slots():
    assert prompts.slots("query_summary") == {"document", "query"}
