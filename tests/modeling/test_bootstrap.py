"""The medportal-tiny bootstrap, run for real at a tiny size: what it saves, how it trains, what it labels."""

import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from modeling.bootstrap import (
    IGNORE_INDEX,
    METADATA_FILE,
    BootstrapConfig,
    Example,
    bootstrap_model,
    case_answer,
    collate,
    encode_example,
    first_clause,
    key_findings,
    length_grouped_batches,
    training_pairs,
)
from modeling.knowledge import load_conditions
from modeling.prompts import diagnosis_prompt, parse_answer
from modeling.runtime import EngineConfig, HFEngine
from modeling.synthetic import generate_cases
from modeling.tokenizer import train_tokenizer

TINY = {
    "train_cases": 400,
    "eval_cases": 20,
    "vocab_size": 2000,
    "hidden_size": 64,
    "layers": 2,
    "heads": 4,
    "intermediate_size": 128,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "max_steps": 40,
}


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory):
    lines = []
    result = bootstrap_model(BootstrapConfig(output_dir=tmp_path_factory.mktemp("medportal-tiny"), **TINY), progress=lines.append)
    return result, lines


@pytest.fixture(scope="module")
def pairs():
    cases = generate_cases(40, seed=3)
    return cases, training_pairs(cases, load_conditions())


@pytest.fixture(scope="module")
def tokenizer(pairs):
    _, examples = pairs
    return train_tokenizer([text for pair in examples for text in pair], vocab_size=1500)


def test_bootstrap_saves_a_loadable_model_tokenizer_and_metadata(bootstrapped):
    result, _ = bootstrapped
    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.tie_word_embeddings and model.config.max_position_embeddings == 512
    assert model.config.vocab_size == len(tokenizer)
    text = "【诊断】肺炎 Diagnosis: Gout"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text

    metadata = json.loads((result.output_dir / METADATA_FILE).read_text(encoding="utf-8"))
    assert metadata["steps"] == result.steps == 40
    assert metadata["config"]["hidden_size"] == 64
    assert metadata["label_set"] == result.label_set
    assert metadata["metrics"]["top1_generate"] == result.top1_generate
    assert metadata["metrics"]["top1_scored"] == result.top1_scored
    assert metadata["metrics"]["eval_cases"] == 20
    assert 0.0 <= result.top1_generate <= 1.0 and 0.0 <= result.top1_scored <= 1.0

    # The runtime serves what was saved.
    engine = HFEngine.load(EngineConfig(base_model=str(result.output_dir)))
    assert engine.info.context_length == 512


def test_the_loss_goes_down_and_progress_is_reported(bootstrapped):
    result, lines = bootstrapped
    curve = json.loads((result.output_dir / METADATA_FILE).read_text(encoding="utf-8"))["loss_curve"]
    assert len(curve) == 20  # the mean loss over each twentieth of the 40 steps
    assert result.final_loss == pytest.approx(curve[-1], abs=1e-4)
    assert curve[-1] < curve[0] - 1.0 and sum(curve[-5:]) < sum(curve[:5])
    assert any(line.startswith("step 40 ") and "loss" in line and "elapsed" in line for line in lines)
    assert result.train_seconds > 0


def test_label_set_has_every_condition_in_both_languages(bootstrapped):
    result, _ = bootstrapped
    conditions = load_conditions()
    assert len(result.label_set) == 2 * len(conditions)
    assert {"急性心肌梗死", "Acute myocardial infarction"} <= set(result.label_set)
    for condition in conditions:
        assert condition.display_name("zh") in result.label_set and condition.display_name("en") in result.label_set


def test_prompt_tokens_carry_no_loss_and_target_tokens_do(pairs, tokenizer):
    _, examples = pairs
    encoded = [encode_example(tokenizer, prompt, target, 512) for prompt, target in examples[:6]]
    batch = collate(encoded, tokenizer.pad_token_id)
    width = max(len(example.input_ids) for example in encoded)
    assert batch["input_ids"].shape == batch["labels"].shape == (6, width)
    for row, ((prompt, target), example) in enumerate(zip(examples[:6], encoded, strict=True)):
        length = len(example.input_ids)
        assert example.prompt_length == len(tokenizer(prompt)["input_ids"])
        assert example.input_ids[0] == tokenizer.bos_token_id and example.input_ids[-1] == tokenizer.eos_token_id
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        assert (labels[: example.prompt_length] == IGNORE_INDEX).all()
        assert torch.equal(labels[example.prompt_length : length], ids[example.prompt_length : length])
        assert (labels[length:] == IGNORE_INDEX).all()  # right padding carries no loss either
        assert (ids[length:] == tokenizer.pad_token_id).all() and batch["attention_mask"][row].sum() == length
        # The target positions hold exactly the answer, which decodes back to the target.
        assert tokenizer.decode(ids[example.prompt_length : length], skip_special_tokens=True) == target


def test_a_long_prompt_is_cut_from_the_left_and_the_target_kept(pairs, tokenizer):
    _, examples = pairs
    prompt, target = examples[0]
    full = encode_example(tokenizer, prompt, target, 512)
    answer = len(full.input_ids) - full.prompt_length
    cut = encode_example(tokenizer, prompt, target, answer + 20)
    assert len(cut.input_ids) == answer + 20 and cut.prompt_length == 20
    assert cut.input_ids[0] == tokenizer.bos_token_id
    assert cut.input_ids[1:] == full.input_ids[-(answer + 19) :]


def test_answers_cite_the_cases_findings_and_keep_the_diagnosis_out_of_the_differential(pairs):
    cases, examples = pairs
    conditions = {condition.id: condition for condition in load_conditions()}
    for case, (prompt, target) in zip(cases, examples, strict=True):
        language = case.language
        findings = key_findings(case, conditions[case.condition_id])
        assert 2 <= len(findings) <= 3
        assert all(finding.casefold() in case.text.casefold() for finding in findings)
        answer = parse_answer(target, language)
        assert answer.complete and answer.diagnosis == case.diagnosis
        assert answer.differential == case_answer(case, conditions[case.condition_id])["differential"]
        assert case.diagnosis not in answer.differential and answer.differential
        # Brief answers: the first clause of the treatment and of the course.
        assert answer.treatment == first_clause(case.treatment, language) and case.treatment.startswith(answer.treatment[:-1])
        assert answer.prognosis == first_clause(case.course, language) and case.course.startswith(answer.prognosis[:-1])
        assert all(finding in answer.rationale for finding in findings)
        assert prompt.endswith("\n")
    assert {case.language for case in cases} == {"zh", "en"}


def test_first_clause_and_full_answers():
    assert first_clause("Loop diuretics for congestion; an ACE inhibitor. Then more.", "en") == "Loop diuretics for congestion."
    assert first_clause("Mostly self-limiting within 1.5 weeks. Rarely worse.", "en") == "Mostly self-limiting within 1.5 weeks."
    assert first_clause("利尿剂减轻容量负荷；ACEI。", "zh") == "利尿剂减轻容量负荷。"
    case = generate_cases(1, seed=5)[0]
    condition = next(c for c in load_conditions() if c.id == case.condition_id)
    full = case_answer(case, condition, brief=False)
    assert full["treatment"] == case.treatment and full["prognosis"] == case.course
    assert full["differential"] == case.differential[1:]


def test_length_grouped_batches_cover_every_example_once():
    lengths = [random.Random(i).randint(10, 300) for i in range(1000)]
    batches = length_grouped_batches(lengths, 16, random.Random(0))
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    assert all(len(batch) <= 16 for batch in batches)
    # Within a batch the lengths are close: far less spread than random batches would have.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 30


def test_the_engines_shared_prefix_scoring_equals_scoring_each_candidate_whole(bootstrapped):
    """score_candidates runs the prompt once and shares its cache; the same quantity (the softmax of each candidate's
    total log-probability) computed the plain way, one full forward pass of prompt + candidate per candidate, must
    agree (across batches of candidates too)."""
    result, _ = bootstrapped
    engine = HFEngine.load(EngineConfig(base_model=str(result.output_dir)), max_batch_size=7)
    labels = result.label_set[1::2][:40]  # English names, of different token lengths, in six batches
    tokenizer, model = engine.tokenizer, engine.model
    for case in generate_cases(3, seed=11, languages=("en",)):
        prompt = diagnosis_prompt(training_pairs([case], load_conditions())[0][0], "en")
        stripped = prompt.rstrip(" ")
        prompt_ids = tokenizer(stripped)["input_ids"]
        totals = []
        for label in labels:
            ids = tokenizer(prompt[len(stripped):] + label, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[0].float().log_softmax(-1)
            totals.append(sum(logits[len(prompt_ids) - 1 + j, token] for j, token in enumerate(ids)))
        expected = torch.stack(totals).softmax(0).tolist()
        assert engine.score_candidates(prompt, labels) == pytest.approx(expected, abs=1e-4)


def test_collate_pads_on_the_right():
    batch = collate([Example([1, 5, 6, 7], 2), Example([1, 8, 2], 1)], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7], [1, 8, 2, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 6, 7], [IGNORE_INDEX, 8, 2, IGNORE_INDEX]]
