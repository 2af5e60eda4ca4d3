"""LoRA fine-tuning on a tiny real Llama, on the CPU: adapters, loss masking and weighting, checkpoints, distillation."""

import json
import shutil

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from modeling.bootstrap import IGNORE_INDEX
from modeling.runtime import EngineConfig, HFEngine
from modeling.tokenizer import train_tokenizer
from modeling.training import (
    FineTuneRun,
    TermMatcher,
    TrainConfig,
    TrainingError,
    answer_logits,
    checkpoints,
    collate_weighted,
    encode_training_examples,
    fine_tune,
    weighted_cross_entropy,
)
from tests.tiny_models import case_records, clinical_lines, write_jsonl


def config(model_dir, data_file, output_dir, **overrides) -> TrainConfig:
    values = dict(base_model=str(model_dir), train_file=str(data_file), output_dir=str(output_dir), max_steps=6,
                  batch_size=8, max_length=256, learning_rate=5e-3, eval_steps=3, save_steps=3, logging_steps=1,
                  lora_dropout=0.0, finetuning_type="lora")
    return TrainConfig(**{**values, **overrides})


def started(cfg: TrainConfig, **kwargs) -> FineTuneRun:
    run = FineTuneRun(cfg, **kwargs)
    run.setup()
    return run


def adapted_modules(model) -> set[str]:
    """Names of the modules that carry LoRA weights ("...layers.0.self_attn.q_proj.lora_A.default.weight" → q_proj)."""
    return {name.split(".lora_")[0].rsplit(".", 1)[-1] for name, _ in model.named_parameters() if ".lora_" in name}


def adapter_state(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


# ---------------------------------------------------------------------------------------------------- LoRA


def test_only_q_proj_and_v_proj_get_adapters_by_default(tiny_model_dir, training_jsonl, tmp_path):
    run = started(config(tiny_model_dir, training_jsonl, tmp_path))
    adapted = adapted_modules(run.model)
    trainable = {name for name, parameter in run.model.named_parameters() if parameter.requires_grad}

    assert adapted == {"q_proj", "v_proj"}
    assert trainable and all("lora_" in name for name in trainable)
    lora = run.model.peft_config["default"]
    assert (lora.r, lora.lora_alpha) == (16, 32)


def test_target_modules_are_configurable_and_a_missing_one_is_named(tiny_model_dir, training_jsonl, tmp_path):
    run = started(config(tiny_model_dir, training_jsonl, tmp_path, target_modules=("q_proj", "k_proj", "o_proj"), lora_r=4))
    assert adapted_modules(run.model) == {"q_proj", "k_proj", "o_proj"}

    with pytest.raises(TrainingError, match="no module named qkv_proj"):
        started(config(tiny_model_dir, training_jsonl, tmp_path / "b", target_modules=("qkv_proj",)))


def test_a_few_steps_lower_the_validation_loss(tiny_model_dir, training_jsonl, tmp_path):
    run = started(config(tiny_model_dir, training_jsonl, tmp_path, max_steps=20, eval_steps=100, learning_rate=2e-2))
    before = run.evaluate()
    result = run.train()

    # nats per answer token; LoRA on q/v of a 64-wide model moves slowly (12 steps gave 0.246 here: too close to call)
    assert result.best_eval_loss < before - 0.25
    assert result.steps == 20 and not result.stopped


def test_save_load_merge_gives_the_same_logits(tiny_model_dir, training_jsonl, tmp_path):
    run = started(config(tiny_model_dir, training_jsonl, tmp_path, max_steps=4))
    result = run.train()
    inputs = run.tokenizer(["主诉：胸痛3小时。", "Complaint: cough for 2 hours."], return_tensors="pt", padding=True)
    run.model.eval()
    with torch.no_grad():
        trained = run.model(**inputs).logits

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), result.adapter_dir)
    merged = reloaded.merge_and_unload().eval()
    with torch.no_grad():
        merged_logits = merged(**inputs).logits
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        base_logits = base(**inputs).logits

    torch.testing.assert_close(merged_logits, trained, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(base_logits, trained, atol=1e-3)  # the adapter changed something
    # The engine the workers use loads the same adapter.
    engine = HFEngine.load(EngineConfig(base_model=str(tiny_model_dir), adapter=str(result.adapter_dir)))
    with torch.no_grad():
        torch.testing.assert_close(engine.model(**inputs).logits, trained, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------- full fine-tuning


def test_full_fine_tuning_trains_every_weight_and_saves_a_model_the_engine_loads_alone(tiny_model_dir, training_jsonl,
                                                                                       tmp_path):
    run = started(config(tiny_model_dir, training_jsonl, tmp_path, finetuning_type="full", max_steps=4,
                         learning_rate=None))
    assert all(parameter.requires_grad for parameter in run.model.parameters())
    assert not hasattr(run.model, "peft_config")
    assert run.config.learning_rate == 1e-3  # the default for whole small models
    result = run.train()
    assert result.finetuning_type == "full"
    inputs = run.tokenizer(["主诉：胸痛3小时。", "Complaint: cough for 2 hours."], return_tensors="pt", padding=True)
    run.model.eval()
    with torch.no_grad():
        trained = run.model(**inputs).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(**inputs).logits
    assert not torch.allclose(base, trained, atol=1e-3)
    # A whole model with its tokenizer: a version of its own, no base model or adapter needed.
    engine = HFEngine.load(EngineConfig(base_model=str(result.adapter_dir)))
    assert engine.info.adapter is None
    with torch.no_grad():
        torch.testing.assert_close(engine.model(**inputs).logits, trained, atol=1e-4, rtol=1e-4)


def test_auto_fine_tunes_a_small_model_whole_and_keeps_lora_for_quantised_or_adapter_runs(tiny_model_dir,
                                                                                          lora_adapter_dir,
                                                                                          training_jsonl, tmp_path):
    auto = started(config(tiny_model_dir, training_jsonl, tmp_path / "a", finetuning_type="auto", learning_rate=None))
    assert auto.config.finetuning_type == "full" and auto.config.learning_rate == 1e-3
    continued = started(config(tiny_model_dir, training_jsonl, tmp_path / "b", finetuning_type="auto",
                               adapter=str(lora_adapter_dir), learning_rate=None))
    assert continued.config.finetuning_type == "lora" and continued.config.learning_rate == 2e-4
    with pytest.raises(TrainingError, match="full fine-tuning trains the whole model"):
        config(tiny_model_dir, training_jsonl, tmp_path, finetuning_type="full", adapter=str(lora_adapter_dir))
    with pytest.raises(TrainingError, match="full fine-tuning needs unquantised weights"):
        config(tiny_model_dir, training_jsonl, tmp_path, finetuning_type="full", quantization="8bit")


def test_a_full_fine_tune_resumes_from_its_checkpoint_and_ends_where_an_unbroken_run_ends(tiny_model_dir, training_jsonl,
                                                                                          tmp_path):
    from safetensors.torch import load_file

    full = dict(finetuning_type="full", learning_rate=1e-3)
    unbroken = fine_tune(config(tiny_model_dir, training_jsonl, tmp_path / "unbroken", **full))
    calls = []
    stopped = fine_tune(config(tiny_model_dir, training_jsonl, tmp_path / "broken", **full),
                        should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert stopped.steps == 3 and (stopped.last_checkpoint / "tokenizer.json").is_file()
    resumed = fine_tune(config(tiny_model_dir, training_jsonl, tmp_path / "broken", resume_from_checkpoint="latest",
                               **full))
    assert resumed.steps == 6
    weights = load_file(unbroken.output_dir / "final" / "model.safetensors")
    for name, tensor in load_file(resumed.output_dir / "final" / "model.safetensors").items():
        torch.testing.assert_close(tensor, weights[name])


# ---------------------------------------------------------------------------------------------------- checkpoints


def test_resume_continues_at_the_saved_step_and_ends_where_an_unbroken_run_ends(tiny_model_dir, training_jsonl, tmp_path):
    unbroken = fine_tune(config(tiny_model_dir, training_jsonl, tmp_path / "unbroken", lora_dropout=0.1))

    calls = []
    stopped = fine_tune(config(tiny_model_dir, training_jsonl, tmp_path / "broken", lora_dropout=0.1),
                        should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert stopped.stopped and stopped.steps == 3
    state = json.loads((stopped.last_checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["config"]["lora_r"] == 16 and state["metrics"]

    steps_seen = []
    resumed = fine_tune(config(tiny_model_dir, training_jsonl, tmp_path / "broken", lora_dropout=0.1,
                               resume_from_checkpoint="latest"),
                        on_event=lambda event: steps_seen.append(event.step) if event.kind == "log" else None)

    assert steps_seen == [4, 5, 6]
    assert resumed.steps == 6 and not resumed.stopped
    for name, tensor in adapter_state(unbroken.output_dir / "final").items():
        torch.testing.assert_close(adapter_state(resumed.output_dir / "final")[name], tensor)


def test_checkpoints_hold_config_step_and_metrics_and_old_ones_are_pruned(tiny_model_dir, training_jsonl, tmp_path):
    result = fine_tune(config(tiny_model_dir, training_jsonl, tmp_path, max_steps=9, save_steps=2, save_total_limit=2))

    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-8", "checkpoint-9"]
    state = json.loads((tmp_path / "checkpoint-9" / "trainer_state.json").read_text())
    assert state["config"]["base_model"] == str(tiny_model_dir)
    assert state["step"] == 9 and state["best_eval_loss"] == result.best_eval_loss
    assert (tmp_path / "best" / "adapter_config.json").is_file()
    assert result.adapter_dir == tmp_path / "best"


def test_resume_refuses_a_checkpoint_of_another_configuration(tiny_model_dir, training_jsonl, tmp_path):
    fine_tune(config(tiny_model_dir, training_jsonl, tmp_path, max_steps=3))
    with pytest.raises(TrainingError, match="lora_r=16"):
        started(config(tiny_model_dir, training_jsonl, tmp_path, max_steps=6, lora_r=8, resume_from_checkpoint="latest"))
    with pytest.raises(TrainingError, match="no checkpoint"):
        started(config(tiny_model_dir, training_jsonl, tmp_path / "empty", resume_from_checkpoint="latest"))
    # Another seed would split train and validation cases differently: the run would train on what it validated on.
    with pytest.raises(TrainingError, match="seed=0, not 1"):
        started(config(tiny_model_dir, training_jsonl, tmp_path, max_steps=6, seed=1, resume_from_checkpoint="latest"))
    with pytest.raises(TrainingError, match="already past this run's 2 steps"):
        started(config(tiny_model_dir, training_jsonl, tmp_path, max_steps=2, resume_from_checkpoint="latest"))


def test_a_best_adapter_saved_after_the_checkpoint_resumed_from_is_not_kept(tiny_model_dir, training_jsonl, tmp_path):
    # An interrupted run evaluated (and kept a best adapter) at step 4 but died before its next checkpoint.
    fine_tune(config(tiny_model_dir, training_jsonl, tmp_path, max_steps=4, eval_steps=2, save_steps=2, save_total_limit=5))
    shutil.rmtree(tmp_path / "checkpoint-4")
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] in (2, 4)

    run = started(config(tiny_model_dir, training_jsonl, tmp_path, max_steps=4, eval_steps=2, save_steps=2,
                         resume_from_checkpoint=str(tmp_path / "checkpoint-2")))
    best = tmp_path / "best" / "best.json"
    assert not best.exists() or json.loads(best.read_text())["step"] <= 2
    result = run.train()
    assert json.loads(best.read_text())["step"] == result.metrics["best_step"]


def test_continual_training_starts_from_an_existing_adapter(tiny_model_dir, lora_adapter_dir, training_jsonl, tmp_path):
    run = started(config(tiny_model_dir, training_jsonl, tmp_path, adapter=str(lora_adapter_dir)))
    start = {name: tensor.clone() for name, tensor in run.model.state_dict().items() if "lora_B" in name}
    assert any(tensor.abs().sum() > 0 for tensor in start.values())  # peft would start a new adapter's B at zero
    run.train()
    after = {name: tensor for name, tensor in run.model.state_dict().items() if "lora_B" in name}
    assert any(not torch.equal(start[name], after[name]) for name in start)


# ---------------------------------------------------------------------------------------------------- loss


def test_prompt_and_padding_tokens_carry_no_loss(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = [("### Case\nchest pain\n### Answer\n", "Diagnosis: angina"),
             ("### Case\ncough 2 hours\n### Answer\n", "Diagnosis: bronchitis")]
    examples = encode_training_examples(tokenizer, pairs, 128)
    batch = collate_weighted(examples, tokenizer.pad_token_id)

    for row, example in enumerate(examples):
        labelled = (batch["labels"][row] != IGNORE_INDEX).nonzero().flatten().tolist()
        assert labelled == list(range(example.prompt_length, len(example.input_ids)))
        answer = tokenizer.decode(batch["labels"][row][labelled], skip_special_tokens=True)
        assert answer == pairs[row][1]
        assert batch["weights"][row, : example.prompt_length].sum() == 0

    # The loss is the full model's cross-entropy over exactly those positions.
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        logits, labels, keep = answer_logits(model, batch)
        ours = weighted_cross_entropy(logits, labels, batch["weights"][:, 1:][keep])
        reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    torch.testing.assert_close(ours, reference)


def test_term_weights_change_only_term_tokens_and_factor_one_is_plain_cross_entropy(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = [("### Case\nchest pain\n### Answer\n", "Diagnosis: acute myocardial infarction\nTreatment: rest")]
    matcher = TermMatcher(["myocardial infarction", "心肌梗死"])
    plain = encode_training_examples(tokenizer, pairs, 128)[0]
    weighted = encode_training_examples(tokenizer, pairs, 128, matcher, 3.0)[0]
    target_ids = weighted.input_ids[weighted.prompt_length :]

    heavy = [tokenizer.decode([token]) for token, w in zip(target_ids, weighted.weights, strict=True) if w == 3.0]
    assert "".join(heavy).strip() == "myocardial infarction"  # every token of the multi-token term, nothing else
    assert len(heavy) > 1
    assert all(w == 1.0 for w in plain.weights)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        logits, labels, keep = answer_logits(model, collate_weighted([weighted], tokenizer.pad_token_id))
        token_ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        w = torch.tensor(weighted.weights)
        ones = torch.ones_like(w)
        torch.testing.assert_close(weighted_cross_entropy(logits, labels, w), (w * token_ce).sum() / w.sum())
        torch.testing.assert_close(weighted_cross_entropy(logits, labels, ones), token_ce.mean())


def test_chinese_terms_are_weighted_inside_running_text(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = [("### 病例\n胸痛\n### 回答\n", "【诊断】急性心肌梗死\n【治疗建议】休息")]
    example = encode_training_examples(tokenizer, pairs, 128, TermMatcher(["心肌梗死"]), 2.0)[0]
    target_ids = example.input_ids[example.prompt_length :]
    heavy = tokenizer.decode([t for t, w in zip(target_ids, example.weights, strict=True) if w == 2.0])
    assert heavy == "心肌梗死"


def test_a_term_weighted_run_trains(tiny_model_dir, training_jsonl, tmp_path):
    lexicon = tmp_path / "terms.txt"
    lexicon.write_text("angina\n心绞痛  # a comment\n", encoding="utf-8")
    result = fine_tune(config(tiny_model_dir, training_jsonl, tmp_path / "run", term_weight=2.0, term_lexicon=str(lexicon)))
    assert result.steps == 6 and result.final_loss is not None

    with pytest.raises(TrainingError, match="term lexicon not found"):
        started(config(tiny_model_dir, training_jsonl, tmp_path / "x", term_weight=2.0, term_lexicon=str(tmp_path / "nope.txt")))


# ---------------------------------------------------------------------------------------------------- distillation


def teacher_student_kl(teacher, student, batch) -> float:
    with torch.no_grad():
        t, _, _ = answer_logits(teacher, batch)
        s, _, _ = answer_logits(student, batch)
    return torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean").item()


def test_distillation_moves_the_student_toward_the_teacher(tiny_model_dir, lora_adapter_dir, training_jsonl, tmp_path):
    teacher = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_adapter_dir).merge_and_unload()
    run = started(config(tiny_model_dir, training_jsonl, tmp_path, max_steps=15, eval_steps=100,
                         distill_teacher=str(tiny_model_dir), distill_teacher_adapter=str(lora_adapter_dir),
                         distill_alpha=1.0, learning_rate=1e-2))
    batch = collate_weighted(run.val_examples, run.tokenizer.pad_token_id)
    before = teacher_student_kl(teacher.eval(), run.model.eval(), batch)
    run.train()
    after = teacher_student_kl(teacher, run.model.eval(), batch)

    assert after < before * 0.7


def test_distillation_works_when_the_teacher_pads_its_output_layer_differently(tiny_model_dir, training_jsonl, tmp_path):
    # Larger checkpoints of one family pad their vocabulary to another multiple (Qwen2.5 7B: 152064, 0.5B: 151936).
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    teacher.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=256)
    teacher.save_pretrained(tmp_path / "padded-teacher")
    tokenizer.save_pretrained(tmp_path / "padded-teacher")
    assert teacher.get_output_embeddings().weight.shape[0] > len(tokenizer)  # the student's is exactly len(tokenizer)

    result = fine_tune(config(tiny_model_dir, training_jsonl, tmp_path / "run", max_steps=2,
                              distill_teacher=str(tmp_path / "padded-teacher")))
    assert result.steps == 2 and result.final_loss is not None


def test_distillation_refuses_a_teacher_with_another_tokenizer(tiny_model_dir, training_jsonl, tmp_path):
    tokenizer = train_tokenizer(clinical_lines(200, seed=5)[::-1] + ["another vocabulary entirely"], vocab_size=3000)
    other = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                         vocab_size=len(tokenizer), max_position_embeddings=256))
    other.save_pretrained(tmp_path / "other")
    tokenizer.save_pretrained(tmp_path / "other")

    with pytest.raises(TrainingError, match="do not share a tokenizer"):
        started(config(tiny_model_dir, training_jsonl, tmp_path / "run", distill_teacher=str(tmp_path / "other")))


# ---------------------------------------------------------------------------------------------------- data and errors


def test_validation_cases_never_appear_in_training(tiny_model_dir, training_jsonl, tmp_path):
    run = started(config(tiny_model_dir, training_jsonl, tmp_path, val_fraction=0.25))
    train = {tuple(example.input_ids) for example in run.train_examples}
    val = {tuple(example.input_ids) for example in run.val_examples}
    assert val and not train & val
    assert len(run.train_examples) + len(run.val_examples) == 80


def test_a_separate_validation_file_is_used_as_given(tiny_model_dir, training_jsonl, tmp_path):
    val_file = write_jsonl(case_records(12, seed=9), tmp_path / "val.jsonl")
    run = started(config(tiny_model_dir, training_jsonl, tmp_path / "run", val_file=str(val_file)))
    assert len(run.val_examples) == 12


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_file": "/nonexistent/cases.jsonl"}, "training file not found: /nonexistent/cases.jsonl"),
        ({"base_model": "/nonexistent/model"}, "model files missing at /nonexistent/model"),
        ({"quantization": "4bit"}, "4-bit quantisation needs a CUDA GPU"),
    ],
)
def test_bad_configurations_fail_with_a_clear_message(tiny_model_dir, training_jsonl, tmp_path, overrides, message):
    with pytest.raises(TrainingError, match=message):
        started(config(tiny_model_dir, training_jsonl, tmp_path, **overrides))


def test_invalid_numbers_are_all_named_at_once():
    with pytest.raises(TrainingError) as error:
        TrainConfig(base_model="m", train_file="t", output_dir="o", batch_size=0, learning_rate=3, quantization="2bit")
    assert "batch_size must be at least 1" in str(error.value)
    assert "learning_rate must be between 0 and 1" in str(error.value)
    assert "quantization must be one of none, 8bit, 4bit" in str(error.value)


def test_a_bad_row_in_the_training_file_names_its_line(tiny_model_dir, training_jsonl, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(training_jsonl.read_text(encoding="utf-8") + '{"text": "no label"}\n', encoding="utf-8")
    with pytest.raises(TrainingError, match="line 81: no diagnosis"):
        started(config(tiny_model_dir, bad, tmp_path / "run"))


# ---------------------------------------------------------------------------------------------------- quantised


def test_an_8bit_lora_step_runs_on_the_cpu(tiny_model_dir, training_jsonl, tmp_path):
    run = started(config(tiny_model_dir, training_jsonl, tmp_path, quantization="8bit", max_steps=2, eval_steps=100))
    int8 = [name for name, parameter in run.model.named_parameters() if parameter.dtype == torch.int8]
    assert int8, "the base model's linear layers are stored in int8"
    before = {name: p.detach().clone() for name, p in run.model.named_parameters() if p.requires_grad}
    result = run.train()
    changed = [name for name, p in run.model.named_parameters() if p.requires_grad and not torch.equal(p, before[name])]

    assert result.steps == 2 and changed
    assert (result.adapter_dir / "adapter_config.json").is_file()


def test_tensorboard_reporting_writes_event_files(tiny_model_dir, training_jsonl, tmp_path):
    fine_tune(config(tiny_model_dir, training_jsonl, tmp_path, max_steps=2, report_to="tensorboard"))
    assert list((tmp_path / "runs").glob("events.out.tfevents.*"))


def test_a_diverging_run_stops_with_a_clear_message_and_keeps_its_last_good_weights(tiny_model_dir, training_jsonl, tmp_path):
    # An fp16 overflow or a corrupted checkpoint gives the same: a loss that is not a number.
    broken = tmp_path / "broken-model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("inf")
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(broken)

    with pytest.raises(TrainingError, match=r"the loss became (nan|inf) at step 1: training diverged; lower the learning rate"):
        fine_tune(config(broken, training_jsonl, tmp_path / "run"))
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["checkpoint-0"]
