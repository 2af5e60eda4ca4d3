"""GPU check for a machine with a CUDA GPU: load a model in 8-bit and in 4-bit through our runtime and generate, then
train LoRA a few steps on each: QLoRA (4-bit nf4 base, k-bit preparation) and 8-bit, bf16 where the GPU has it.

Usage: python bench/gpu_check.py [--model DIR]
Without --model it builds a small Llama from a config (layer sizes multiples of 32, so 4-bit packs) with a
tokenizer trained on generated cases. Prints device, memory, a generation per quantisation and, per training
quantisation, the losses of its steps; exits 1 on failure.
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

from bench.inference_batching import build_tiny_model  # noqa: E402
from modeling.prompts import build_prompt  # noqa: E402
from modeling.runtime import EngineConfig, GenerationParams, HFEngine, ModelLoadError  # noqa: E402
from modeling.synthetic import generate_cases, write_jsonl  # noqa: E402
from modeling.training import FineTuneRun, TrainConfig, TrainingError  # noqa: E402

TRAIN_STEPS = 4


def training_step_check(model_dir: Path, scratch: Path, quantization: str) -> bool:
    """A few LoRA steps with the base in ``quantization`` on the GPU; True when they ran and the adapter changed."""
    data = scratch / "cases.jsonl"
    if not data.exists():
        write_jsonl(generate_cases(64, seed=11), data)
    torch.cuda.reset_peak_memory_stats()
    losses = []
    config = TrainConfig(base_model=str(model_dir), train_file=str(data), output_dir=str(scratch / f"train-{quantization}"),
                         quantization=quantization, max_steps=TRAIN_STEPS, batch_size=4, max_length=384,
                         learning_rate=1e-3, logging_steps=1, eval_steps=TRAIN_STEPS, save_steps=TRAIN_STEPS)
    started = time.perf_counter()
    try:
        run = FineTuneRun(config, on_event=lambda e: losses.append(round(e.loss, 3)) if e.kind == "log" else None)
        run.setup()
        quantized = sorted({str(p.dtype).removeprefix("torch.") for p in run.model.parameters() if not p.requires_grad})
        before = {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}
        result = run.train()
        changed = sum(not torch.equal(p, before[n]) for n, p in run.model.named_parameters() if p.requires_grad)
        run.cleanup()
    except (TrainingError, RuntimeError) as error:
        print(f"train {quantization}: FAILED: {error}")
        return False
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(f"train {quantization}: {result.steps} steps in {time.perf_counter() - started:.1f} s, frozen dtypes {quantized}, "
          f"peak {peak:.0f} MiB, losses {losses}, eval loss {result.best_eval_loss:.3f}, {changed} adapter tensors changed")
    return result.steps == TRAIN_STEPS and changed > 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: this check needs one")
        return 1
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    prompts = [build_prompt("Chest pain for 2 hours, sweating, ST elevation on ECG.", "en"),
               build_prompt("发热3天，咳嗽，咳黄痰，右下肺湿啰音。", "zh")]
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or build_tiny_model(Path(scratch))
        for quantization in ("none", "8bit", "4bit"):
            torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            try:
                engine = HFEngine.load(EngineConfig(base_model=str(model_dir), quantization=quantization))
                generations = engine.generate(prompts, GenerationParams(max_new_tokens=32))
                scores = engine.score_candidates(prompts[0], ["Acute myocardial infarction", "Pneumonia"])
            except ModelLoadError as error:
                failures += 1
                print(f"{quantization}: FAILED: {error}")
                continue
            peak = torch.cuda.max_memory_allocated() / 2**20
            print(f"{quantization}: dtype {engine.info.dtype}, {time.perf_counter() - started:.1f} s, peak {peak:.0f} MiB, "
                  f"{sum(g.new_tokens for g in generations)} new tokens, scores {[round(s, 3) for s in scores]}")
            print(f"  sample: {generations[0].text[:80]!r}")
            del engine
            torch.cuda.empty_cache()
        for quantization in ("4bit", "8bit"):
            failures += not training_step_check(model_dir, Path(scratch), quantization)
    print("gpu check: " + ("ok" if not failures else f"{failures} failed"))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
