"""Tiny real models for the ML core's tests: a bilingual tokenizer, a two-layer Llama trained for a few seconds, and
a LoRA adapter that changes its outputs. Built once per test session."""

import os
import random
from pathlib import Path

import pytest
import torch

from modeling.tokenizer import train_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models gain nothing from a second thread, and two threads on a shared two-core machine ran 6x slower.
torch.set_num_threads(1)

COMPLAINTS = [
    ("胸痛", "chest pain", "心绞痛", "angina"),
    ("咳嗽", "cough", "支气管炎", "bronchitis"),
    ("发热", "fever", "流感", "influenza"),
    ("头痛", "headache", "偏头痛", "migraine"),
    ("腹痛", "abdominal pain", "阑尾炎", "appendicitis"),
    ("气短", "shortness of breath", "哮喘", "asthma"),
]
TRAINING_STEPS = 60


def clinical_lines(n: int = 400, *, seed: int = 0) -> list[str]:
    """Short admission-note lines, alternating Chinese and English, each ending with its diagnosis."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        zh, en, dx_zh, dx_en = rng.choice(COMPLAINTS)
        hours = rng.randint(1, 48)
        if i % 2:
            lines.append(f"Complaint: {en} for {hours} hours. Diagnosis: {dx_en}.")
        else:
            lines.append(f"主诉：{zh}{hours}小时。诊断：{dx_zh}。")
    return lines


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lines = clinical_lines()
    tokenizer = train_tokenizer(lines, vocab_size=4000)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    _train(model, tokenizer, lines)

    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _train(model, tokenizer, lines: list[str]) -> None:
    rng = random.Random(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(TRAINING_STEPS):
        batch = tokenizer(
            [line + tokenizer.eos_token for line in rng.sample(lines, 32)],
            padding=True,
            padding_side="right",
            return_tensors="pt",
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="session")
def lora_adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    # peft starts lora_B at zero (the adapter is a no-op until trained); give it weights that change the outputs.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    path = tmp_path_factory.mktemp("tiny-lora")
    model.save_pretrained(path)
    return path


def case_records(n: int = 80, *, seed: int = 0) -> list[dict]:
    """Labelled case records (the JSONL format that training reads), alternating Chinese and English."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        zh, en, dx_zh, dx_en = COMPLAINTS[i % len(COMPLAINTS)]
        hours = i + 1 + rng.randint(0, 3) * n  # every text differs
        if i % 2:
            text, diagnosis, language = f"Complaint: {en} for {hours} hours.", dx_en, "en"
        else:
            text, diagnosis, language = f"主诉：{zh}{hours}小时。", dx_zh, "zh"
        records.append({"id": f"case-{i:03d}", "language": language, "text": text, "diagnosis": diagnosis})
    return records


def write_jsonl(records: list[dict], path: Path) -> Path:
    import json

    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


@pytest.fixture
def training_jsonl(tmp_path) -> Path:
    """80 tiny labelled cases as JSONL: what a case set exports and what training reads."""
    return write_jsonl(case_records(), tmp_path / "cases.jsonl")
