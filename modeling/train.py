"""Fine-tune a causal LM with LoRA on a JSONL of labelled cases: ``python -m modeling.train --help``. No Django.

    python -m modeling.train --base_model var/models/medportal-tiny --train_file cases.jsonl \\
        --output_dir var/training/run1 --epochs 3 --batch_size 8

Exit status 0 when the run finished (or stopped with a checkpoint), 2 for a configuration error (the message says
what to fix: a missing file, an unknown model, a tokenizer mismatch), 130 when interrupted (a checkpoint is saved).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import fields

from modeling.training import REPORT_TO, TrainConfig, TrainEvent, TrainingError, fine_tune

DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not f.default_factory}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modeling.train",
        description="LoRA fine-tuning (SFT, term-weighted loss, distillation) on a JSONL of labelled cases.",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--base_model", required=True, help="model folder (or hub id when online)")
    data.add_argument("--train_file", required=True, help="JSONL records: text, diagnosis, optional treatment, ...")
    data.add_argument("--val_file", help="JSONL for evaluation; default: a split of --train_file by case/patient id")
    data.add_argument("--val_fraction", type=float, default=DEFAULTS["val_fraction"])
    data.add_argument("--output_dir", required=True)
    data.add_argument("--augment", action="store_true", help="synonym and phrasing augmentation of training cases")
    data.add_argument("--augment_copies", type=int, default=DEFAULTS["augment_copies"],
                      help="rephrased variants per training case with --augment")
    data.add_argument("--seed", type=int, default=DEFAULTS["seed"])

    loop = parser.add_argument_group("schedule")
    loop.add_argument("--epochs", type=float, default=DEFAULTS["epochs"])
    loop.add_argument("--max_steps", type=int, default=None, help="overrides --epochs")
    loop.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"])
    loop.add_argument("--max_length", type=int, default=DEFAULTS["max_length"])
    loop.add_argument("--learning_rate", type=float, default=DEFAULTS["learning_rate"],
                      help="default: 1e-3 for full fine-tuning, 2e-4 for LoRA")
    loop.add_argument("--weight_decay", type=float, default=DEFAULTS["weight_decay"])
    loop.add_argument("--warmup_steps", type=float, default=DEFAULTS["warmup_steps"], help="steps, or a fraction below 1")
    loop.add_argument("--eval_steps", type=int, default=DEFAULTS["eval_steps"])
    loop.add_argument("--save_steps", type=int, default=DEFAULTS["save_steps"])
    loop.add_argument("--save_total_limit", type=int, default=DEFAULTS["save_total_limit"])
    loop.add_argument("--logging_steps", type=int, default=DEFAULTS["logging_steps"])
    loop.add_argument("--resume_from_checkpoint", help="a checkpoint folder, or 'latest' in --output_dir")

    lora = parser.add_argument_group("LoRA and quantisation")
    lora.add_argument("--finetuning_type", choices=("auto", "lora", "full"), default=DEFAULTS["finetuning_type"],
                      help="full: every weight (small models); lora: adapters; auto: full below 100M parameters")
    lora.add_argument("--lora_r", type=int, default=DEFAULTS["lora_r"])
    lora.add_argument("--lora_alpha", type=int, default=DEFAULTS["lora_alpha"])
    lora.add_argument("--lora_dropout", type=float, default=DEFAULTS["lora_dropout"])
    lora.add_argument("--target_modules", default=",".join(("q_proj", "v_proj")), help="comma-separated module names")
    lora.add_argument("--adapter", help="continue training this LoRA adapter (continual learning)")
    lora.add_argument("--quantization", choices=("none", "8bit", "4bit"), default=DEFAULTS["quantization"])
    lora.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")

    loss = parser.add_argument_group("loss")
    loss.add_argument("--term_weight", type=float, default=DEFAULTS["term_weight"],
                      help="weight of answer tokens inside medical terms (1 = plain cross-entropy)")
    loss.add_argument("--term_lexicon", help="extra medical terms, one per line")
    loss.add_argument("--diagnosis_weight", type=float, default=DEFAULTS["diagnosis_weight"],
                      help="weight of the answer's diagnosis line (1 = like any other answer token)")
    loss.add_argument("--distill_teacher", help="teacher model folder (must share the student's tokenizer)")
    loss.add_argument("--distill_teacher_adapter", help="LoRA adapter applied to the teacher")
    loss.add_argument("--distill_alpha", type=float, default=DEFAULTS["distill_alpha"])
    loss.add_argument("--distill_temperature", type=float, default=DEFAULTS["distill_temperature"])

    parser.add_argument("--report_to", choices=REPORT_TO, default="none")
    parser.add_argument("--no_progress", action="store_true", help="log lines instead of a progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {name: value for name, value in vars(args).items() if name != "no_progress"}
    values["target_modules"] = tuple(name.strip() for name in args.target_modules.split(",") if name.strip())
    return TrainConfig(**values)


class Progress:
    """A tqdm bar over the steps, with log lines written above it."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __call__(self, event: TrainEvent) -> None:
        if self.enabled and self.bar is None and event.total_steps:
            from tqdm import tqdm

            self.bar = tqdm(total=event.total_steps, initial=event.step, unit="step", dynamic_ncols=True, file=sys.stderr)
        if self.bar is not None:
            self.bar.n = event.step
            if event.loss is not None:
                self.bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)
            self.bar.refresh()
            if event.kind != "log":
                self.bar.write(event.message, file=sys.stderr)
        else:
            print(event.message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    progress = Progress(enabled=not args.no_progress and sys.stderr.isatty())
    interrupted = []

    def stop_after_this_step(signum, frame):
        if interrupted:  # a second Ctrl-C: stop now, without a checkpoint
            raise KeyboardInterrupt
        interrupted.append(signum)
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    signal.signal(signal.SIGINT, stop_after_this_step)
    try:
        config = config_from_args(args)
        result = fine_tune(config, on_event=progress, should_stop=lambda: bool(interrupted))
    except TrainingError as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        progress.close()
    print(f"{'model' if result.finetuning_type == 'full' else 'adapter'}: {result.adapter_dir}")
    if result.best_eval_loss is not None:
        print(f"best eval loss: {result.best_eval_loss:.4f}")
    print(f"steps: {result.steps}/{result.total_steps}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
