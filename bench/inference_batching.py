"""Tokens/s of 32 concurrent analyses through our runtime against 32 sequential model.generate calls.

Usage: python bench/inference_batching.py [--model DIR] [--max-new-tokens 64]
Without --model it uses var/models/medportal-tiny when present, else builds a tiny Llama from a config
(hidden 256, 4 layers, random weights) with a tokenizer trained on generated cases. Prints `ratio: N.N` last.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from modeling.prompts import build_prompt  # noqa: E402
from modeling.runtime import EngineConfig, GenerationParams, HFEngine  # noqa: E402
from modeling.synthetic import generate_cases  # noqa: E402
from modeling.tokenizer import train_tokenizer  # noqa: E402

CONCURRENT = 32


def build_tiny_model(directory: Path, texts: list[str] | None = None, *, vocab_size: int = 4000, context: int = 1024) -> Path:
    """A Llama from a config (hidden 256, 4 layers, random weights) with a tokenizer trained on ``texts``
    (default: prompts of 600 generated cases), saved into ``directory``."""
    if texts is None:
        texts = [build_prompt(c.text, c.language) for c in generate_cases(600, seed=7)]
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    config = LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
                         num_key_value_heads=8, vocab_size=len(tokenizer), max_position_embeddings=context,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def sequential_baseline(engine: HFEngine, prompts: list[str], max_new_tokens: int) -> tuple[int, float]:
    """The seed's way: one tokenizer call and one model.generate per request."""
    model, tokenizer = engine.model, engine.tokenizer
    new_tokens, started = 0, time.perf_counter()
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        new_tokens += output.shape[1] - inputs["input_ids"].shape[1]
    return new_tokens, time.perf_counter() - started


def batched_runtime(engine: HFEngine, prompts: list[str], max_new_tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    generations = engine.generate(prompts, GenerationParams(max_new_tokens=max_new_tokens))
    return sum(g.new_tokens for g in generations), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model
        if model_dir is None:
            default = Path(__file__).resolve().parent.parent / "var" / "models" / "medportal-tiny"
            model_dir = default if (default / "config.json").exists() else build_tiny_model(Path(scratch))
        engine = HFEngine.load(EngineConfig(base_model=str(model_dir)), max_batch_size=CONCURRENT)
        cases = generate_cases(CONCURRENT, seed=11)
        prompts = [build_prompt(c.text, c.language) for c in cases]
        batched_runtime(engine, prompts[:4], 4)  # warm-up

        seq_tokens, seq_seconds = sequential_baseline(engine, prompts, args.max_new_tokens)
        bat_tokens, bat_seconds = batched_runtime(engine, prompts, args.max_new_tokens)

    seq_rate, bat_rate = seq_tokens / seq_seconds, bat_tokens / bat_seconds
    size = f"{engine.info.parameters / 1e6:.1f}M parameters"
    print(f"model: {model_dir} ({size}, {engine.info.device}, {torch.get_num_threads()} threads)")
    print(f"sequential model.generate x{CONCURRENT}: {seq_tokens} tokens in {seq_seconds:.2f} s = {seq_rate:.0f} tok/s")
    print(f"runtime, {CONCURRENT} concurrent analyses: {bat_tokens} tokens in {bat_seconds:.2f} s = {bat_rate:.0f} tok/s")
    print(f"ratio: {bat_rate / seq_rate:.1f}")


if __name__ == "__main__":
    main()
