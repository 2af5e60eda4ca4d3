import re

import pytest
import torch

from modeling.runtime import (
    Engine,
    EngineConfig,
    Generation,
    GenerationParams,
    HFEngine,
    ModelLoadError,
    get_engine,
    release_engine,
)
from modeling.tokenizer import train_tokenizer
from tests.tiny_models import clinical_lines

pytestmark = [
    # Third-party noise: importing bitsandbytes imports torch's inductor, and peft reads a renamed transformers property.
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

GREEDY = GenerationParams(max_new_tokens=16)
PROMPTS = [
    "主诉：发热3小时。诊断：",
    "Complaint: cough for 12 hours. Diagnosis:",
    "主诉：",
    "Complaint: shortness of breath for 30 hours. Diagnosis:",
    "Complaint:",
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> HFEngine:
    return HFEngine.load(EngineConfig(str(tiny_model_dir)))


@pytest.fixture(scope="module")
def adapted_engine(tiny_model_dir, lora_adapter_dir) -> HFEngine:
    return HFEngine.load(EngineConfig(str(tiny_model_dir), adapter=str(lora_adapter_dir)))


def test_the_tokenizer_keeps_chinese_characters_whole_and_never_unknown():
    tokenizer = train_tokenizer(clinical_lines(), vocab_size=4000)
    text = "主诉：胸痛2小时，体温３８.５℃！Patient has cough."
    ids = tokenizer(text)["input_ids"]

    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert {"胸", "痛", "，", "：", "５", "2"} <= set(tokenizer.get_vocab())
    assert tokenizer.padding_side == "left"


def test_it_generates_text_with_token_counts(engine):
    prompt = "Complaint: cough for 12 hours. Diagnosis:"

    [generation] = engine.generate([prompt], GenerationParams(max_new_tokens=40))

    assert isinstance(engine, Engine)
    assert generation.text.strip()
    assert generation.prompt_tokens == len(engine.tokenizer(prompt)["input_ids"])
    # The model learnt to end a line with </s>, and generation stops there.
    assert 0 < generation.new_tokens < 40
    assert engine.tokenizer.eos_token not in generation.text


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"temperature": -0.1}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_generation_params_refuse_nonsense(bad):
    with pytest.raises(ValueError):
        GenerationParams(**bad)


def test_batched_generation_matches_one_prompt_at_a_time(engine):
    one_by_one = [engine.generate([prompt], GREEDY)[0] for prompt in PROMPTS]
    # Small chunks exercise the split into batches and the return to input order.
    chunked = HFEngine(engine.model, engine.tokenizer, engine.info, max_batch_size=2)

    assert engine.generate(PROMPTS, GREEDY) == one_by_one
    assert chunked.generate(PROMPTS, GREEDY) == one_by_one
    assert engine.generate([], GREEDY) == []


def test_sampling_returns_one_generation_per_prompt(engine):
    generations = engine.generate(PROMPTS, GenerationParams(max_new_tokens=8, temperature=0.8, top_p=0.9))

    assert [g.prompt_tokens for g in generations] == [len(engine.tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert all(isinstance(g, Generation) and g.new_tokens <= 8 for g in generations)


def test_candidate_scores_are_probabilities_that_prefer_what_the_model_learnt(engine):
    english = engine.score_candidates("Complaint: cough for 12 hours. Diagnosis:", [" bronchitis.", " zq blorp 7 xx"])
    chinese = engine.score_candidates("主诉：发热3小时。诊断：", ["流感。", "）ｚ吗哦"])

    for scores in (english, chinese):
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
        assert scores[0] > scores[1]
    assert engine.score_candidates("主诉：", ["胸痛", "咳嗽"]) == engine.score_candidates("主诉：", ["胸痛", "咳嗽"])


def test_candidate_scores_do_not_depend_on_the_other_candidates_padding(engine):
    prompt = "Complaint: fever for 5 hours. Diagnosis:"
    short, long = " influenza.", " influenza. Complaint: cough for 2 hours."

    pair = engine.score_candidates(prompt, [short, long])
    padded = engine.score_candidates(prompt, [short, long, " asthma and a long tail of other words."])

    assert pair[0] / pair[1] == pytest.approx(padded[0] / padded[1], rel=1e-4)


def test_a_long_prompt_is_truncated_from_the_left_keeping_its_end(engine):
    middle = " ".join(clinical_lines(120, seed=3))
    tail = " Complaint: cough for 12 hours. Diagnosis:"
    params = GenerationParams(max_new_tokens=12)
    context = engine.info.context_length
    assert len(engine.tokenizer(middle + tail)["input_ids"]) > context

    first, second = engine.generate(["Ignored beginning. " + middle + tail, "另一个开头。" + middle + tail], params)

    assert first.prompt_tokens == second.prompt_tokens == context - params.max_new_tokens
    # Only the beginnings differ, and both were cut off: the model saw the same end.
    assert first == second
    scores = engine.score_candidates("Ignored. " + middle + tail, [" bronchitis.", " zq blorp 7 xx"])
    assert scores[0] > scores[1]


def test_eight_bit_loads_and_generates_on_the_cpu(tiny_model_dir):
    engine = HFEngine.load(EngineConfig(str(tiny_model_dir), quantization="8bit", device="cpu"))

    [generation] = engine.generate(["Complaint: cough for 12 hours. Diagnosis:"], GenerationParams(max_new_tokens=8))

    import bitsandbytes as bnb

    assert isinstance(engine.model.model.layers[0].self_attn.q_proj, bnb.nn.Linear8bitLt)
    assert (engine.info.quantization, engine.info.device, engine.info.dtype) == ("8bit", "cpu", "bfloat16")
    assert generation.text.strip() and generation.new_tokens > 0


def test_an_adapter_on_an_eight_bit_base_stays_separate_and_applies(tiny_model_dir, lora_adapter_dir):
    from peft import PeftModel

    plain = HFEngine.load(EngineConfig(str(tiny_model_dir), quantization="8bit"))
    adapted = HFEngine.load(EngineConfig(str(tiny_model_dir), adapter=str(lora_adapter_dir), quantization="8bit"))
    inputs = plain.tokenizer(["Complaint: fever for 5 hours."], return_tensors="pt")

    with torch.inference_mode():
        assert not torch.allclose(plain.model(**inputs).logits, adapted.model(**inputs).logits, atol=1e-2)
    assert isinstance(adapted.model, PeftModel)
    scores = adapted.score_candidates("Complaint: fever for 5 hours. Diagnosis:", [" influenza.", " asthma."])
    assert sum(scores) == pytest.approx(1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="4-bit is allowed where there is a CUDA GPU")
def test_four_bit_without_a_gpu_is_refused_with_an_explanation(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="4-bit quantisation needs a CUDA GPU"):
        HFEngine.load(EngineConfig(str(tiny_model_dir), quantization="4bit"))


def test_an_unknown_quantisation_is_refused(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="unknown quantisation 'foo'"):
        HFEngine.load(EngineConfig(str(tiny_model_dir), quantization="foo"))


def test_a_missing_model_path_is_named(tmp_path):
    missing = tmp_path / "no-such-model"

    with pytest.raises(ModelLoadError, match=re.escape(f"model files missing at {missing}")):
        HFEngine.load(EngineConfig(str(missing)))


def test_a_folder_without_model_files_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        HFEngine.load(EngineConfig(str(tmp_path)))


def test_a_missing_adapter_is_named(tiny_model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match=re.escape(f"adapter files missing at {tmp_path}")):
        HFEngine.load(EngineConfig(str(tiny_model_dir), adapter=str(tmp_path)))


def test_an_adapter_changes_the_logits_and_is_reported(engine, adapted_engine, lora_adapter_dir):
    inputs = engine.tokenizer(["主诉：咳嗽5小时。诊断："], return_tensors="pt")

    with torch.inference_mode():
        base_logits = engine.model(**inputs).logits
        adapted_logits = adapted_engine.model(**inputs).logits

    assert engine.info.adapter is None
    assert adapted_engine.info.adapter == str(lora_adapter_dir.resolve())
    assert not torch.allclose(base_logits, adapted_logits, atol=1e-3)


def test_get_engine_loads_once_per_config(tiny_model_dir, lora_adapter_dir):
    config = EngineConfig(str(tiny_model_dir))
    try:
        first = get_engine(config)
        assert get_engine(EngineConfig(str(tiny_model_dir))) is first

        adapted = get_engine(EngineConfig(str(tiny_model_dir), adapter=str(lora_adapter_dir)))
        assert adapted is not first
        assert get_engine(config) is not first
    finally:
        release_engine()


def test_loading_writes_no_progress_bars_into_worker_logs(tiny_model_dir, capfd):
    capfd.readouterr()
    HFEngine.load(EngineConfig(base_model=str(tiny_model_dir)))
    assert "Loading weights" not in capfd.readouterr().err


@pytest.fixture(scope="module")
def chatty_model_dir(tmp_path_factory):
    """A tiny model that writes the answer's closing line and then keeps talking, never emitting EOS (as some
    instruction-tuned checkpoints do with a format they were not trained on)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lines = [f"{line}\n### END\nAnd then some more words about it" for line in clinical_lines(200)]
    tokenizer = train_tokenizer(lines, vocab_size=1200)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                         vocab_size=len(tokenizer), max_position_embeddings=256,
                                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                         pad_token_id=tokenizer.pad_token_id))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(120):
        batch = tokenizer(lines[step % 6 * 32:][:32], padding=True, padding_side="right", return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    path = tmp_path_factory.mktemp("chatty")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_generation_stops_at_the_answers_closing_line(chatty_model_dir):
    engine = HFEngine.load(EngineConfig(str(chatty_model_dir)))
    prompts = ["Complaint: cough for 12 hours. Diagnosis: bronchitis.\n", "主诉：头痛3小时。诊断：偏头痛。\n"]

    unstopped = engine.generate(prompts, GenerationParams(max_new_tokens=40, stop=()))
    stopped = engine.generate(prompts, GenerationParams(max_new_tokens=40))

    for before, after in zip(unstopped, stopped, strict=True):
        assert "### END\nAnd then" in before.text and before.new_tokens == 40  # runs on to the limit without a stop
        assert after.text.rstrip().endswith("### END")
        assert after.new_tokens < before.new_tokens
        assert before.text.startswith(after.text.rstrip())
