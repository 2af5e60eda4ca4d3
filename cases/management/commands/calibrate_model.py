"""Choose a model version's abstention threshold on a labelled validation case set.

    python manage.py calibrate_model --model-version medportal-tiny --case-set validation --target 0.9
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from cases.models import CaseSet
from cases.services import version_calibrate
from modeling.runtime import ModelLoadError
from modeling.selectors import model_version_by_name


class Command(BaseCommand):
    help = "Choose the probability below which a version's answers read 'uncertain', on validation cases."

    def add_arguments(self, parser):
        parser.add_argument("--model-version", required=True)
        parser.add_argument("--case-set", required=True, help="validation cases (never the ones it trained on)")
        parser.add_argument("--target", type=float, default=0.9, help="accuracy the asserted answers must reach")
        parser.add_argument("--limit", type=int, default=500, help="cases used at most")

    def handle(self, *args, **options):
        version = model_version_by_name(options["model_version"])
        if version is None:
            raise CommandError(f"No model version named {options['model_version']!r}.")
        case_set = CaseSet.objects.filter(name=options["case_set"]).first()
        if case_set is None:
            raise CommandError(f"No case set named {options['case_set']!r}.")
        if not 0 < options["target"] <= 1:
            raise CommandError("--target is an accuracy between 0 and 1.")
        try:
            result = version_calibrate(version=version, case_set=case_set, target_accuracy=options["target"],
                                       limit=options["limit"])
        except (ValidationError, ModelLoadError) as error:
            raise CommandError(" ".join(getattr(error, "messages", [str(error)]))) from None
        confident = "n/a" if result.accuracy_confident is None else f"{result.accuracy_confident:.1%}"
        self.stdout.write(
            f"{version.name}: threshold {result.threshold:.4f} on {result.cases} cases of {case_set.name}; "
            f"asserts {result.coverage:.1%} of them at {confident} accuracy (all cases: {result.accuracy_all:.1%}; "
            f"target {result.target_accuracy:.0%})."
        )
