"""GPU check for a machine with a CUDA GPU: load a model in 8-bit and in 4-bit through our runtime and generate.

Usage: python bench/gpu_check.py [--model DIR]
Without --model it builds a small Llama from a config (layer sizes multiples of 32, so 4-bit packs) with a
tokenizer trained on generated cases. Prints device, memory and a generation per quantisation; exits 1 on failure.
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
    print("gpu check: " + ("ok" if not failures else f"{failures} failed"))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
