import json

import pytest

from megadoc.evals.baselines import LeadBaseline, MajorityAnswerBaseline, MostFrequentNameBaseline
from megadoc.evals.hf import HFPredictor
from megadoc.evals.runner import run_eval
from megadoc.evals.scrolls import Example, load_qmsum
from tests.helpers import LLAMA_WINDOW as WINDOW
from tests.helpers import SAILOR_STORY as STORY
from tests.helpers import SHARED_DATA

QMSUM_VAL = SHARED_DATA / "qmsum" / "val"
needs_qmsum = pytest.mark.skipif(
    not QMSUM_VAL.is_dir(), reason=f"QMSum validation data not found at {QMSUM_VAL} (see shared/data/README.md)"
)


def example(task: str = "narrativeqa", document: str = STORY, question: str = "Who sent the letter?") -> Example:
    return Example("x", task, document, question, ["his brother"])


def test_lead_baseline_takes_the_first_sentences():
    lead = LeadBaseline(sentences=2)
    assert (
        lead.predict(example())
        == "The old sailor lived by the sea. Every morning he mended his nets and talked to the gulls."
    )
    assert LeadBaseline(sentences=50).predict(example(document="One. Two?")) == "One. Two?"


def test_majority_answer_counts_normalized_answers():
    # "Yes" and "yes." are one answer (2 votes) against "Unanswerable" (1) and "No" (1).
    baseline = MajorityAnswerBaseline(["Unanswerable", "Yes", "yes.", "No", ""])
    assert baseline.predict(example()) == "Yes"
    train = [example(), Example("y", "narrativeqa", "d", "q", ["his brother", "brother"])]
    assert MajorityAnswerBaseline.from_examples(train).answer == "his brother"
    with pytest.raises(ValueError):
        MajorityAnswerBaseline(["", "the"])


@needs_qmsum
def test_lead_baseline_on_qmsum_val_gives_a_real_rouge(tmp_path):
    summary = run_eval("qmsum", load_qmsum(QMSUM_VAL), LeadBaseline(sentences=10), tmp_path / "lead.jsonl")
    assert summary.count == 272
    # A floor: measured R-1/2/L 15.1 / 1.8 / 9.6, geometric mean 6.4 (SCROLLS' naive QMSum
    # baseline on the test set: 14.2 / 2.0 / 9.3).
    assert 10 < summary.metrics["rouge1"] < 25
    assert 0.5 < summary.metrics["rouge2"] < 5
    assert 3 < summary.score < 10


def test_hf_prompt_keeps_the_question_and_cuts_the_end_of_the_document(tiny_llama):
    predictor = HFPredictor(tiny_llama, max_new_tokens=8, context="scrolls")
    assert predictor.window == WINDOW
    long = example(document=STORY * 40 + "THE LAST WORDS")
    ids = predictor.prompt_ids(long)
    assert len(ids) + 8 == WINDOW  # filled exactly: window minus the tokens to generate
    assert ids[0] == predictor.tokenizer.bos_token_id
    text = predictor.tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith("Who sent the letter?\n\nThe old sailor")  # SCROLLS' input, from its start
    assert text.endswith("Question: Who sent the letter?\nAnswer:")  # the question again, then the cue
    assert "LAST WORDS" not in text


def test_hf_prompt_of_a_short_document_is_whole(tiny_llama):
    predictor = HFPredictor(tiny_llama, max_new_tokens=8, context="scrolls")
    text = predictor.tokenizer.decode(predictor.prompt_ids(example(document="A short tale.")), skip_special_tokens=True)
    assert text.startswith("Who sent the letter?\n\nA short tale.\n\n")


def test_hf_window_too_small_for_the_question(tiny_llama):
    for context in ("scrolls", "head"):
        predictor = HFPredictor(tiny_llama, max_new_tokens=8, window=20, context=context)
        with pytest.raises(ValueError, match="no room for the document"):
            predictor.prompt_ids(example())


def test_hf_head_reads_the_documents_first_tokens_then_asks(tiny_llama):
    # The tiny tokenizer has no chat template: the prompt is plain text, BOS first.
    predictor = HFPredictor(tiny_llama, max_new_tokens=8)
    ids = predictor.prompt_ids(example(document=STORY * 40 + "THE LAST WORDS"))
    assert len(ids) + 8 == WINDOW and ids[0] == predictor.tokenizer.bos_token_id
    text = predictor.tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith("Who sent the letter?\n\nThe old sailor lived by the sea.")
    assert text.endswith("Question: Who sent the letter?\nAnswer:") and "LAST WORDS" not in text


def test_hf_recall_feeds_the_passages_that_match_the_question(tiny_llama):
    filler = "The gulls cried over the grey water and the nets dried in the wind. " * 60
    document = filler + "A stranger brought a letter from the lighthouse keeper Bartholomew. " + filler
    predictor = HFPredictor(tiny_llama, max_new_tokens=8, recall=True)
    prompt = predictor.prompt(document, "Where does Bartholomew keep watch?", "scrolls_narrativeqa", 8)
    assert "Bartholomew" in prompt.context and prompt.context.startswith("[line 1]")
    assert "Bartholomew" not in predictor.tokenizer.decode(
        HFPredictor(tiny_llama, 8).prompt_ids(example(document=document))
    )
    # Nothing shares a word with the question: the head, as without recall.
    head = predictor.prompt(document, "Zzz?", "scrolls_narrativeqa", 8)
    assert head.context.startswith("The gulls cried")
    with pytest.raises(ValueError, match="recall replaces"):
        HFPredictor(tiny_llama, context="scrolls", recall=True)


def test_hf_head_uses_the_chat_template_when_the_tokenizer_has_one(tiny_llama, tmp_path):
    import shutil

    chat = tmp_path / "chat"
    shutil.copytree(tiny_llama, chat)
    config = chat / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    settings["chat_template"] = "{% for m in messages %}<s>USER: {{ m['content'] }}</s>{% endfor %}ASSISTANT:"
    config.write_text(json.dumps(settings))
    predictor = HFPredictor(chat, max_new_tokens=8)
    text = predictor.tokenizer.decode(predictor.prompt_ids(example()))
    assert text.startswith("<s>USER: Who sent the letter?\n\nThe old sailor")
    assert text.endswith("Question: Who sent the letter?</s>ASSISTANT:")  # the cue is the assistant's turn


def test_hf_choose_takes_the_name_likeliest_after_the_prompt(tiny_llama):
    import torch

    predictor = HFPredictor(tiny_llama, max_new_tokens=8)
    prompt = predictor.prompt(STORY, "Who sent the letter?", "qa", 8)
    names = ["Harville", "Benwick", "Bartholomew", "Anne"]

    def logprob(name: str) -> float:  # one pass over prompt and name, no cache
        ids = predictor.tokenizer.encode(" " + name, add_special_tokens=False)
        with torch.inference_mode():
            logits = predictor.model(torch.tensor([prompt.ids + ids])).logits[0].float().log_softmax(-1)
        return sum(float(logits[len(prompt.ids) - 1 + i, token]) for i, token in enumerate(ids))

    assert predictor.choose(prompt, names) == max(names, key=logprob)
    assert predictor.choose(prompt, names[::-1]) == predictor.choose(prompt, names)


def test_most_frequent_name_floor_skips_the_names_the_question_uses():
    story = " ".join(["Then came Harville to the shore, and soon Benwick too."] * 9 + ["Only Harville stayed."])
    assert MostFrequentNameBaseline().predict(example(document=story, question="Who met Benwick?")) == "Harville"
    assert MostFrequentNameBaseline().predict(example(document=story, question="Who met Harville?")) == "Benwick"
    assert MostFrequentNameBaseline().predict(example(document="no names here")) == ""


def test_hf_predictor_decodes_greedily(tiny_llama, tmp_path):
    predictor = HFPredictor(tiny_llama, max_new_tokens=8, context="scrolls")
    answer = predictor.predict(example())
    assert isinstance(answer, str) and "\n" not in answer
    assert predictor.predict(example()) == answer  # greedy: the same every time
    summary = run_eval("narrativeqa", [example()], predictor, tmp_path / "hf.jsonl")
    assert summary.count == 1 and 0 <= summary.score <= 100


def test_vllm_predictor(tiny_llama):
    pytest.importorskip("vllm", reason="vllm is not installed (optional, GPU only)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vllm needs a CUDA GPU")
    from megadoc.evals.baselines import VLLMPredictor

    predictor = VLLMPredictor(tiny_llama, max_new_tokens=8, max_model_len=WINDOW, enforce_eager=True)
    assert isinstance(predictor.predict(example()), str)
