"""GTPA@1 of the product's fine-tuning against training minutes, beside the TF-IDF baseline, on cases split by patient.

    python bench/training_curve.py --data ../shared/data/en-dev.jsonl --dataset ddxplus --minutes 30
    python bench/training_curve.py --data ../shared/data/zh-dev.jsonl --minutes 20

The file's cases (optionally one `meta.dataset` of it) are split by patient before anything is trained: 80 % train,
20 % test. The baseline (evaluation.baseline) learns from the training side; the model is fine-tuned on it with the
training core's defaults for its size (modeling.training, as the product's training runs use it), saving a checkpoint
every --every steps; each checkpoint is then scored on the test side by ranking the training side's diagnoses, as an
evaluation run does. Prints one line per checkpoint (minutes, GTPA@1/3) and the baseline's line; the last line is
`gtpa@1: model M baseline B ratio R` (R = M / B, 1.0 or more: the model reaches the baseline).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluation.baseline import LabelledText, TfidfBaseline  # noqa: E402
from evaluation.metrics import CasePrediction, summarise  # noqa: E402
from modeling.dataprep import split_of  # noqa: E402
from modeling.prompts import build_prompt, diagnosis_prompt  # noqa: E402
from modeling.runtime import EngineConfig, HFEngine  # noqa: E402
from modeling.training import FineTuneRun, TrainConfig, checkpoints  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def split(path: Path, dataset: str | None, seed: int) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if dataset:
        rows = [row for row in rows if (row.get("meta") or {}).get("dataset") == dataset]
    train, test = [], []
    for row in rows:
        group = row.get("patient_id") or row["id"]
        # Salted apart from the training run's own validation split (same seed, same hash): else the cases that split
        # would hold out are exactly those held out here, and its validation side comes out nearly empty.
        side = split_of(f"holdout:{group}", val_fraction=0.0, test_fraction=0.2, seed=seed)
        (test if side == "test" else train).append(row)
    return train, test


def score(model_dir: str, test: list[dict], labels: list[str]) -> dict:
    engine = HFEngine.load(EngineConfig(base_model=model_dir))
    cases = []
    for row in test:
        prompt = diagnosis_prompt(build_prompt(row["text"], row["language"]), row["language"])
        ranked = sorted(zip(labels, engine.score_candidates(prompt, labels), strict=True), key=lambda p: -p[1])
        cases.append(CasePrediction(case_id=row["id"], language=row["language"], gold=row["diagnosis"],
                                    diagnosis=ranked[0][0], ranked=ranked,
                                    gold_differential=[d[0] for d in row.get("differential") or []]))
    overall = summarise(cases, lexicon=[])["overall"]
    return {k: overall[k] for k in ("gtpa@1", "gtpa@3", "ddf1")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", help="only the rows whose meta.dataset is this (e.g. ddxplus)")
    parser.add_argument("--base_model", default=str(ROOT / "var/models/medportal-tiny"))
    parser.add_argument("--minutes", type=float, default=30.0, help="stop training after this long (a checkpoint is kept)")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--every", type=int, default=100, help="checkpoint (and curve point) every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetuning_type", default="auto")
    parser.add_argument("--learning_rate", type=float)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--output_dir", type=Path)
    parser.add_argument("--augment_copies", type=int, default=0, help="rephrased variants per case (0: none)")
    parser.add_argument("--weight_decay", type=float, default=0.0)
    parser.add_argument("--diagnosis_weight", type=float, default=1.0)
    args = parser.parse_args()

    train, test = split(args.data, args.dataset, args.seed)
    labels = sorted({row["diagnosis"] for row in train})
    print(f"{len(train)} training and {len(test)} test cases (split by patient), {len(labels)} labels", flush=True)
    baseline = TfidfBaseline(seed=args.seed).fit([LabelledText(r["text"], r["diagnosis"], r["language"]) for r in train])
    baseline_cases = [baseline.predict(r["id"], r["text"], r["language"], r["diagnosis"],
                                       gold_differential=[d[0] for d in r.get("differential") or []]) for r in test]
    base = summarise(baseline_cases, lexicon=[])["overall"]

    output = args.output_dir or Path(tempfile.mkdtemp(prefix="training-curve-"))
    train_file = output / "train.jsonl"
    output.mkdir(parents=True, exist_ok=True)
    train_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train), encoding="utf-8")
    config = TrainConfig(base_model=args.base_model, train_file=str(train_file), output_dir=str(output / "run"),
                         finetuning_type=args.finetuning_type, learning_rate=args.learning_rate, epochs=args.epochs,
                         batch_size=args.batch_size, save_steps=args.every, eval_steps=args.every,
                         save_total_limit=10_000, logging_steps=20, seed=args.seed, augment=args.augment_copies > 0,
                         augment_copies=max(1, args.augment_copies), weight_decay=args.weight_decay,
                         diagnosis_weight=args.diagnosis_weight)
    started = time.monotonic()
    minutes_at: dict[int, float] = {}

    def on_event(event) -> None:
        if event.kind == "checkpoint":
            minutes_at[event.step] = (time.monotonic() - started) / 60
        if event.kind in ("message", "eval", "done"):
            print(f"  {event.message}", flush=True)

    run = FineTuneRun(config, on_event=on_event, should_stop=lambda: time.monotonic() - started > args.minutes * 60)
    try:
        run.setup()
        started = time.monotonic()  # training minutes: the loop, not loading
        run.train()
    finally:
        run.cleanup()

    print(f"{'minutes':>8} {'step':>6} {'GTPA@1':>8} {'GTPA@3':>8}")
    best = 0.0
    for checkpoint in checkpoints(output / "run"):
        step = int(checkpoint.name.split("-")[1])
        figures = score(str(checkpoint), test, labels)
        best = max(best, figures["gtpa@1"]["value"])
        print(f"{minutes_at.get(step, float('nan')):8.1f} {step:6d} {figures['gtpa@1']['value']:8.3f} "
              f"{figures['gtpa@3']['value']:8.3f}", flush=True)
    print(f"baseline (TF-IDF + LR): GTPA@1 {base['gtpa@1']['value']:.3f} GTPA@3 {base['gtpa@3']['value']:.3f}")
    print(f"gtpa@1: model {best:.3f} baseline {base['gtpa@1']['value']:.3f} ratio {best / base['gtpa@1']['value']:.3f}")


if __name__ == "__main__":
    main()
