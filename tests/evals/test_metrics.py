import math

import pytest

from megadoc.evals import metrics


def test_normalize_answer_lowercases_drops_punctuation_articles_and_extra_space():
    assert metrics.normalize_answer("  The Cat, an owl & A dog! ") == "cat owl dog"
    # Articles go only as whole words: "theory" and "another" stay.
    assert metrics.normalize_answer("the theory of another") == "theory of another"


def test_token_f1_by_hand():
    # "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down].
    # shared 2: precision 2/2, recall 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8
    assert metrics.token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # Repeated tokens count once per match: [cat, cat] vs [cat]: shared 1,
    # precision 1/2, recall 1/1, F1 = 2/3.
    assert metrics.token_f1("cat cat", "cat") == pytest.approx(2 / 3)
    assert metrics.token_f1("Yes.", "yes") == 1.0
    assert metrics.token_f1("dog", "cat") == 0.0
    # An answer of only articles/punctuation is empty after normalization: F1 0 (SQuAD v1.1).
    assert metrics.token_f1("the", "the") == 0.0


def test_max_f1_takes_the_best_reference():
    # vs "hello": P 1/2, R 1, F1 2/3; vs "hi there": P 1/2, R 1/2, F1 1/2.
    assert metrics.max_f1("hello there", ["hello", "hi there"]) == pytest.approx(2 / 3)
    assert metrics.max_f1("anything", []) == 0.0


def test_rouge_scores_by_hand():
    # prediction "the cat sat on the mat", reference "the cat lay on the mat":
    # unigrams: 5 of 6 shared each way -> R1 = 5/6.
    # bigrams: pred {the cat, cat sat, sat on, on the, the mat}, ref {the cat, cat lay, lay on,
    #   on the, the mat}: 3 of 5 shared -> R2 = 3/5.
    # LCS: "the cat on the mat" = 5 -> RL = 5/6.
    scores = metrics.rouge_scores("the cat sat on the mat", "the cat lay on the mat")
    assert scores == pytest.approx({"rouge1": 5 / 6, "rouge2": 3 / 5, "rougeL": 5 / 6})


def test_rouge_ignores_newlines_so_sentence_splitting_does_not_matter():
    one_line = metrics.rouge_scores("We met. We agreed on a plan.", "The team met. They agreed.")
    split = metrics.rouge_scores("We met.\nWe agreed on a plan.", "The team met.\nThey agreed.")
    assert one_line == split


def test_no_stemming_by_default_as_in_scrolls():
    # "meetings" vs "meeting": different tokens unless stemmed.
    assert metrics.rouge_scores("meetings", "meeting")["rouge1"] == 0.0
    assert metrics.rouge_scores("meetings", "meeting", use_stemmer=True)["rouge1"] == 1.0


def test_qmsum_score_is_the_geometric_mean_times_100():
    # (0.5 * 0.2 * 0.4) ** (1/3) = 0.04 ** (1/3) = 0.3420 -> 34.20
    assert metrics.qmsum_score({"rouge1": 0.5, "rouge2": 0.2, "rougeL": 0.4}) == pytest.approx(100 * 0.04 ** (1 / 3))
    assert metrics.qmsum_score({"rouge1": 0.5, "rouge2": 0.0, "rougeL": 0.4}) == 0.0


# The example in the docstring of SCROLLS' official metric (tau/scrolls metrics/scrolls.py):
# rouge1 72.2222, rouge2 33.3333, rougeL 72.2222, geometric mean 55.8136; F1 72.2222.
PREDICTIONS = ["exact match example", "hello there", "general kenobi"]
REFERENCES = [["exact match example"], ["hello", "hi there"], ["commander kenobi"]]


def test_scrolls_docstring_example_rouge():
    per_example = [metrics.example_metrics("qmsum", p, r) for p, r in zip(PREDICTIONS, REFERENCES, strict=True)]
    result = metrics.task_metrics("qmsum", per_example)
    assert result["rouge1"] == pytest.approx(72.2222, abs=1e-4)
    assert result["rouge2"] == pytest.approx(33.3333, abs=1e-4)
    assert result["rougeL"] == pytest.approx(72.2222, abs=1e-4)
    assert result["score"] == pytest.approx(55.8136, abs=1e-4)
    # The score is the geometric mean of the averages, not the average of per-example
    # geometric means (which would be (100 + 0 + 0) / 3 here).
    assert result["score"] != pytest.approx(
        sum(metrics.example_score("qmsum", m) for m in per_example) / len(per_example)
    )


def test_scrolls_docstring_example_f1():
    # (1 + 2/3 + 1/2) / 3 = 0.72222
    per_example = [metrics.example_metrics("qasper", p, r) for p, r in zip(PREDICTIONS, REFERENCES, strict=True)]
    assert metrics.task_metrics("qasper", per_example)["score"] == pytest.approx(72.2222, abs=1e-4)


def test_rouge_types_are_maximized_over_references_independently():
    # "d c b a" shares all 4 unigrams but no bigram; "a b x y" shares the bigram "a b" of
    # 3 each way (P = R = F = 1/3). The best of each type comes from a different reference.
    best = metrics.max_rouge("a b c d", ["d c b a", "a b x y"])
    assert best["rouge1"] == 1.0
    assert math.isclose(best["rouge2"], 1 / 3)


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        metrics.example_metrics("gov_report", "x", ["y"])


def test_squality_takes_each_rouge_at_its_best_reference_and_scores_their_geometric_mean():
    # vs "the cat sat": R-1 1, R-2 1, R-L 1; vs "a dog ran": all 0. Each type's best is kept.
    per = metrics.example_metrics("squality", "the cat sat", ["a dog ran", "the cat sat"])
    assert per == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    half = metrics.example_metrics("squality", "cat sat down", ["cat sat", "down"])
    # vs "cat sat": R-1 P 2/3 R 1 F 0.8, R-2 P 1/2 R 1 F 2/3; vs "down": R-1 P 1/3 R 1 F 0.5.
    assert half["rouge1"] == pytest.approx(0.8) and half["rouge2"] == pytest.approx(2 / 3)
    aggregated = metrics.task_metrics("squality", [per, half])
    assert aggregated["rouge1"] == pytest.approx(90.0)
    expected = (aggregated["rouge1"] * aggregated["rouge2"] * aggregated["rougeL"]) ** (1 / 3)
    assert aggregated["score"] == pytest.approx(expected)


def test_fairytaleqa_scores_rouge_l_f1_at_the_best_reference():
    # LCS of "a well to do farmer" and "the farmer": [farmer]: P 1/5, R 1/2, F 2/7.
    per = metrics.example_metrics("fairytaleqa", "a well to do farmer", ["the farmer", "nobody"])
    assert per == {"rougeL": pytest.approx(2 / 7)}
    assert metrics.example_score("fairytaleqa", per) == pytest.approx(100 * 2 / 7)
    assert metrics.task_metrics("fairytaleqa", [per, {"rougeL": 0.0}])["score"] == pytest.approx(50 * 2 / 7)
