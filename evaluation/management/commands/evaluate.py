"""Evaluate a model version on a labelled case set, beside the TF-IDF baseline: the numbers the run's page shows.

    python manage.py evaluate --model-version medportal-tiny --case-set ddx-test
    python manage.py evaluate --model-version medportal-tiny --file cases.jsonl   # imported (de-identified) first

The run is an EvaluationRun like one started from the admin, executed in this process; the table compares the
version with the baseline on the same cases, and --json writes the stored metrics.
"""

import json
from pathlib import Path

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from cases.management.commands.import_cases import actor_named, default_set_name
from cases.models import CaseSet
from cases.services import CaseSetImportError, case_set_import
from evaluation.models import EvaluationRun
from evaluation.services import evaluation_run_create, evaluation_run_execute
from modeling.models import ModelVersion

ROWS = ("accuracy", "gtpa@1", "gtpa@3", "gtpa@5", "ddf1", "term_precision", "f1_weighted", "f1_macro")


def cell(block: dict, name: str) -> str:
    value = block.get(name)
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"
    return f"{value:.3f}"


def table(run: EvaluationRun) -> str:
    model, base = run.metrics.get("overall", {}), run.baseline.get("overall", {})
    comparison = run.baseline.get("comparison", {})
    width = max(len(run.model_version.name), 28)
    lines = [f"{'metric':<16}{run.model_version.name:<{width}}  {'baseline (TF-IDF + LR)':<28}  difference (model - baseline)"]
    for name in ROWS:
        difference = comparison.get(name)
        if name == "accuracy" and difference:
            diff = f"{difference['difference']:+.3f} (McNemar p={difference['p_value']:.3g})"
        elif isinstance(difference, dict):
            diff = f"{difference['difference']:+.3f} [{difference['low']:+.3f}, {difference['high']:+.3f}]"
        else:
            diff = ""
        lines.append(f"{name:<16}{cell(model, name):<{width}}  {cell(base, name):<28}  {diff}")
    lines.append(f"cases: {run.metrics.get('n', 0)}; baseline trained on {run.baseline.get('trained_on') or '-'}")
    for language, block in run.metrics.get("by_language", {}).items():
        other = run.baseline.get("by_language", {}).get(language, {})
        lines.append(f"  {language}: accuracy {cell(block, 'accuracy')}, GTPA@1 {cell(block, 'gtpa@1')}; "
                     f"baseline GTPA@1 {cell(other, 'gtpa@1')} (n={block['n']})")
    return "\n".join(lines)


class Command(BaseCommand):
    help = "Evaluate a model version on a labelled case set beside the TF-IDF + logistic-regression baseline."

    def add_arguments(self, parser):
        parser.add_argument("--model-version", required=True, help="the version's name")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--case-set", help="an imported case set's name")
        source.add_argument("--file", type=Path, help="a JSONL/CSV of labelled cases, imported into a case set first")
        parser.add_argument("--baseline-case-set", help="train the baseline on this case set (default: the version's "
                                                        "training file, else cross-fitted on the evaluated cases)")
        parser.add_argument("--limit", type=int, help="evaluate the first N cases only")
        parser.add_argument("--max-new-tokens", type=int, default=96)
        parser.add_argument("--user", help="the ML admin running it (recorded in the audit trail)")
        parser.add_argument("--json", dest="json_path", type=Path, help="write the run's metrics here")

    def handle(self, *args, model_version, case_set, file, baseline_case_set, limit, max_new_tokens, user, json_path: Path | None,
               **options):
        actor = actor_named(user)
        version = ModelVersion.objects.filter(name=model_version).first()
        if version is None:
            raise CommandError(f"No model version named {model_version!r}.")
        if file is not None:
            try:
                report = case_set_import(path=file, case_set=default_set_name(file), actor=actor)
            except CaseSetImportError as error:
                raise CommandError(str(error)) from None
            evaluated = report.case_set
            self.stderr.write(f"imported {file.name} into case set {evaluated.name} ({report.imported} new cases)")
        else:
            evaluated = self._case_set(case_set)
        trained = self._case_set(baseline_case_set) if baseline_case_set else None
        try:
            run = evaluation_run_create(version=version, case_set=evaluated, baseline_case_set=trained, limit=limit,
                                        max_new_tokens=max_new_tokens, started_by=actor, enqueue=False)
        except (ValidationError, PermissionDenied) as error:
            raise CommandError(" ".join(getattr(error, "messages", [str(error)]))) from None
        self.stderr.write(f"evaluation run #{run.pk}: {version.name} on {evaluated.name} ({run.total} cases)")
        evaluation_run_execute(run_id=run.pk)
        run.refresh_from_db()
        if run.status != EvaluationRun.Status.SUCCEEDED:
            raise CommandError(f"evaluation run #{run.pk} {run.status}: {run.error}")
        self.stdout.write(table(run))
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            payload = {"run": run.pk, "model_version": version.name, "case_set": evaluated.name,
                       "metrics": run.metrics, "baseline": run.baseline, "frequent_errors": run.errors}
            json_path.write_text(json.dumps(payload, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            self.stderr.write(f"wrote {json_path}")

    @staticmethod
    def _case_set(name: str) -> CaseSet:
        found = CaseSet.objects.filter(name=name).first()
        if found is None:
            raise CommandError(f"No case set named {name!r}.")
        return found

