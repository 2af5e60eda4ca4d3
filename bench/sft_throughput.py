"""Trained tokens/s of our SFT batching against the seed's pad-to-max_length collator, same data, same LoRA model.

Usage: python bench/sft_throughput.py [--model DIR] [--examples 192] [--batch-size 8] [--max-length 512]

Data: real public cases from ../shared/data (en-dev.jsonl and zh-dev.jsonl, interleaved), in the house prompt format.
Without --model it builds a small Llama from a config (hidden 256, 4 layers) with a tokenizer trained on that data.
Both ways train the same LoRA adapter (r=16 on q_proj/v_proj) for one pass over the same examples, in
alternating chunks of steps:
- seed: shuffled batches, every example padded to max_length, labels = the whole sequence (prompt included), the
  full vocabulary of logits at every position;
- ours (modeling.training): length-grouped batches padded to their longest example, labels on the answer only,
  logits for the answer positions only.
Trained tokens are the real (non-padding) tokens of the examples; both ways see the same ones, so the ratio is the
speed-up. Prints `ratio: N.N` last (target: at least 2).
"""

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from bench.inference_batching import build_tiny_model  # noqa: E402
from modeling.bootstrap import length_grouped_batches  # noqa: E402
from modeling.dataprep import record_pair  # noqa: E402
from modeling.records import read_records  # noqa: E402
from modeling.training import answer_logits, collate_weighted, encode_training_examples, weighted_cross_entropy  # noqa: E402

SHARED_DATA = Path(os.environ.get("MEDPORTAL_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
CHUNKS = 6


def real_pairs(count: int) -> list[tuple[str, str]]:
    english, chinese = read_records(SHARED_DATA / "en-dev.jsonl"), read_records(SHARED_DATA / "zh-dev.jsonl")
    rng = random.Random(0)
    rng.shuffle(english)
    rng.shuffle(chinese)
    mixed = [record for pair in zip(english, chinese, strict=False) for record in pair] + english[len(chinese):]
    return [record_pair(record) for record in mixed[:count]]


def lora_model(model_dir: Path):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))
    model.train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)


def seed_way(model_dir: Path, pairs, batch_size: int, max_length: int) -> list:
    """The seed's collator: tokenizer(prompt + target, padding="max_length"), labels = input_ids, full logits."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "right"
    model, optimizer = lora_model(model_dir)
    order = list(range(len(pairs)))
    random.Random(0).shuffle(order)

    def step(rows: list[int]) -> int:
        texts = [pairs[i][0] + pairs[i][1] + tokenizer.eos_token for i in rows]
        batch = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return int(batch["attention_mask"].sum())

    return [lambda rows=order[i:i + batch_size]: step(rows) for i in range(0, len(order), batch_size)]


def our_way(model_dir: Path, pairs, batch_size: int, max_length: int) -> list:
    """modeling.training: length-grouped batches, labels and logits on the answer only."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model, optimizer = lora_model(model_dir)
    examples = encode_training_examples(tokenizer, pairs, max_length)
    batches = length_grouped_batches([len(e.input_ids) for e in examples], batch_size, random.Random(0))

    def step(rows: list[int]) -> int:
        batch = collate_weighted([examples[i] for i in rows], tokenizer.pad_token_id)
        logits, labels, keep = answer_logits(model, batch)
        weighted_cross_entropy(logits, labels, batch["weights"][:, 1:][keep]).backward()
        optimizer.step()
        optimizer.zero_grad()
        return int(batch["attention_mask"].sum())

    return [lambda rows=rows: step(rows) for rows in batches]


def timed(steps: list) -> tuple[int, float]:
    started = time.perf_counter()
    tokens = sum(step() for step in steps)
    return tokens, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--examples", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()
    pairs = real_pairs(args.examples)
    with tempfile.TemporaryDirectory() as scratch:
        texts = [text for pair in pairs for text in pair]
        model_dir = args.model or build_tiny_model(Path(scratch), texts, vocab_size=6000, context=args.max_length)
        lengths = [len(e.input_ids) for e in encode_training_examples(AutoTokenizer.from_pretrained(model_dir), pairs,
                                                                      args.max_length)]
        print(f"{len(pairs)} real cases, {sum(lengths) / len(lengths):.0f} tokens on average (longest {max(lengths)}), "
              f"batch {args.batch_size}, max_length {args.max_length}, {torch.get_num_threads()} threads")
        seed_steps = seed_way(model_dir, pairs, args.batch_size, args.max_length)
        our_steps = our_way(model_dir, pairs, args.batch_size, args.max_length)
        # Alternate the two ways a chunk at a time, so that load from elsewhere on the machine hits both alike.
        seed_tokens = seed_seconds = our_tokens = our_seconds = 0
        chunk = max(1, len(seed_steps) // CHUNKS)
        for start in range(0, max(len(seed_steps), len(our_steps)), chunk):
            tokens, seconds = timed(seed_steps[start:start + chunk])
            seed_tokens, seed_seconds = seed_tokens + tokens, seed_seconds + seconds
            tokens, seconds = timed(our_steps[start:start + chunk])
            our_tokens, our_seconds = our_tokens + tokens, our_seconds + seconds
    seed_rate, our_rate = seed_tokens / seed_seconds, our_tokens / our_seconds
    print(f"seed (pad to max_length, loss on prompt too): {seed_tokens} tokens in {seed_seconds:.1f}s, {seed_rate:,.0f}/s")
    print(f"ours (length-grouped, answer-only logits):    {our_tokens} tokens in {our_seconds:.1f}s, {our_rate:,.0f}/s")
    print(f"ratio: {our_rate / seed_rate:.1f}")


if __name__ == "__main__":
    main()
