"""Make sure an active model version exists: the hospital's checkpoint, or the bootstrapped medportal-tiny."""

import json
import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from modeling.bootstrap import BootstrapConfig, bootstrap_model, label_set
from modeling.knowledge import load_conditions
from modeling.models import ModelVersion
from modeling.selectors import model_version_active, model_version_by_name
from modeling.services import model_version_activate, model_version_register

TINY = "medportal-tiny"


class Command(BaseCommand):
    help = (
        "Register MEDPORTAL_BASE_MODEL as the active version when it is set; otherwise train medportal-tiny "
        "(a small Llama-architecture model, at most ~10 minutes on 2 CPU cores) unless it exists, and activate it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Retrain medportal-tiny even if it exists.")
        parser.add_argument("--time-budget", type=float, default=None, help="Training seconds (default: the bootstrap's).")
        parser.add_argument("--max-steps", type=int, default=None, help="Stop after this many optimizer steps.")
        parser.add_argument("--train-cases", type=int, default=None, help="Generated training cases.")
        parser.add_argument("--eval-cases", type=int, default=None, help="Generated held-out cases for top-1.")

    def handle(self, *args, force: bool, **options):
        if settings.MEDPORTAL_BASE_MODEL:
            self._register_checkpoint()
            return
        output_dir = Path(settings.DATA_DIR) / "models" / TINY
        version = model_version_by_name(TINY)
        if version and (output_dir / "config.json").exists() and not force:
            if model_version_active() is None:
                model_version_activate(version=version)
            self.stdout.write(f"{TINY} exists at {output_dir}; nothing to do.")
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        config = BootstrapConfig(output_dir=output_dir)
        for option, field in (("time_budget", "time_budget_s"), ("max_steps", "max_steps"),
                              ("train_cases", "train_cases"), ("eval_cases", "eval_cases")):
            if options[option] is not None:
                setattr(config, field, options[option])
        self.stdout.write(f"Training {TINY} into {output_dir} (this takes a few minutes)…")
        result = bootstrap_model(config, progress=lambda line: self.stdout.write(f"  {line}"))
        metrics = {"top1_generate": result.top1_generate, "top1_scored": result.top1_scored,
                   "steps": result.steps, "train_seconds": round(result.train_seconds, 1), "final_loss": result.final_loss}
        if version:
            version.base_model, version.label_set, version.metrics = str(output_dir), result.label_set, metrics
            version.save()
            model_version_activate(version=version)
        else:
            model_version_register(name=TINY, base_model=str(output_dir), label_set=result.label_set, metrics=metrics,
                                   activate=True)
        self.stdout.write(self.style.SUCCESS(
            f"{TINY} is active: top-1 {result.top1_generate:.1%} (generated), {result.top1_scored:.1%} (scored)."
        ))

    def _register_checkpoint(self) -> None:
        name = settings.MEDPORTAL_MODEL_NAME or Path(settings.MEDPORTAL_BASE_MODEL.rstrip("/")).name
        fields = {
            "base_model": settings.MEDPORTAL_BASE_MODEL,
            "adapter": settings.MEDPORTAL_ADAPTER,
            "quantization": settings.MEDPORTAL_QUANTIZATION,
        }
        version = model_version_by_name(name)
        if version is None:
            version = model_version_register(name=name, label_set=label_set(load_conditions()), **fields)
        else:
            ModelVersion.objects.filter(pk=version.pk).update(**fields)
        model_version_activate(version=version)
        self.stdout.write(self.style.SUCCESS(f"{name} ({json.dumps(fields)}) is the active model version."))
