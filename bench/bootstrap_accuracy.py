"""Bootstrap medportal-tiny with the default settings into a temporary folder and report its accuracy.

    .venv/bin/python bench/bootstrap_accuracy.py

Takes up to ten minutes on two CPU cores. The last line is ``top1: N.N%`` (top-1 of the generated diagnoses).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modeling.bootstrap import BootstrapConfig, bootstrap_model  # noqa: E402


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="medportal-tiny-") as folder:
        result = bootstrap_model(
            BootstrapConfig(output_dir=Path(folder)),
            progress=lambda line: print(f"[{time.monotonic() - started:5.0f}s] {line}", flush=True),
        )
    print(f"steps: {result.steps}")
    print(f"train time: {result.train_seconds:.0f}s (whole run {time.monotonic() - started:.0f}s)")
    print(f"final loss: {result.final_loss:.4f}")
    print(f"top1_generate: {result.top1_generate:.1%}")
    print(f"top1_scored: {result.top1_scored:.1%}")
    print(f"top1: {100 * result.top1_generate:.1f}%")


if __name__ == "__main__":
    main()
