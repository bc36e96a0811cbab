"""Which questions ask for a name, and the names a text holds."""

import pytest

from megadoc.pipeline.names import answer_names, asks_for_a_name, character_names, name_counts
from tests.helpers import AUSTEN


@pytest.mark.parametrize(
    "question",
    [
        "Who is Tarzan's wife?",
        "who created the monster?",
        "Whom does Victor Frankenstein marry?",
        "Whose letters reach the ship?",
        "Who is the Lord Advocate?",
        "Who tells the story?",
    ],
)
def test_questions_asking_for_a_person_want_a_name(question):
    assert asks_for_a_name(question)


@pytest.mark.parametrize(
    "question",
    [
        "Who is Captain Wentworth?",
        "who was Anne Elliot",
        "Who are Harville and Benwick?",
        "Who was Don Diego de Vega?",
        "What is the monster?",
        "",
    ],
)
def test_questions_about_a_named_person_or_no_person_do_not(question):
    assert not asks_for_a_name(question)


def test_name_counts_are_whole_words_the_question_does_not_use():
    text = "Rosmer came home to Rosmersholm. Kroll met Rosmer. Rebecca waited; Kroll left."
    names = {"Rosmer", "Kroll", "Rebecca", "Brendel"}
    assert name_counts(text, names) == {"Rosmer": 2, "Kroll": 2, "Rebecca": 1}
    assert name_counts(text, names, "Who is the master of Rosmersholm?") == {"Rosmer": 2, "Kroll": 2, "Rebecca": 1}
    assert name_counts(text, names, "Who met Rosmer?") == {"Kroll": 2, "Rebecca": 1}


def test_the_characters_of_a_real_excerpt():
    names = character_names(AUSTEN)
    assert {"Elliot", "Walter"} <= names and not names & {"The", "Sir", "Lady"}


def test_a_name_answer_chooses_among_the_shown_names_only_for_a_person():
    shown, names = "Kroll met Rosmer. Rebecca waited.", {"Rosmer", "Kroll", "Rebecca", "Brendel"}
    assert answer_names("Who met Rosmer?", shown, names) == ["Kroll", "Rebecca"]
    assert answer_names("What did Kroll do?", shown, names) == []
