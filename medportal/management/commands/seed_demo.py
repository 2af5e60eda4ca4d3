"""Create one demo user per role, and a labelled case set to fine-tune on, for the embedded demo (DEBUG only)."""

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from cases import roles
from cases.models import CaseSet
from cases.services import case_set_import
from modeling.synthetic import generate_cases, write_jsonl

DEMO_PASSWORD = "medportal-demo"
DEMO_USERS = (
    ("doctor", roles.DOCTOR),
    ("doctor2", roles.DOCTOR),
    ("reviewer", roles.REVIEWER),
    ("mladmin", roles.ML_ADMIN),
    ("auditor", roles.AUDITOR),
)
DEMO_CASE_SET = "demo-synthetic"
DEMO_CASES = 240
DEMO_CASES_SEED = 4242  # not the bootstrap's seed: other draws than medportal-tiny trained on


class Command(BaseCommand):
    help = "Create demo users for each role and print their log-ins."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo creates users with a known password: it runs only with DEBUG on.")
        User = get_user_model()
        for username, role in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(DEMO_PASSWORD)
            user.is_staff = role in roles.STAFF_ROLES
            user.save()
            user.groups.set([Group.objects.get(name=role)])
        self.stdout.write(f"Demo log-ins (password for each: {DEMO_PASSWORD}):")
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {role:<9} {username}")
        self._demo_case_set(User.objects.get(username="mladmin"))

    def _demo_case_set(self, ml_admin) -> None:
        """Bilingual cases generated from the knowledge base, so an ML admin can start a training run at once."""
        if CaseSet.objects.filter(name=DEMO_CASE_SET).exists():
            return
        path = Path(settings.DATA_DIR) / "demo" / f"{DEMO_CASE_SET}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(generate_cases(DEMO_CASES, seed=DEMO_CASES_SEED), path)
        report = case_set_import(path=path, case_set=DEMO_CASE_SET, actor=ml_admin,
                                 description="Generated from the knowledge base for the demo; not real patients.")
        self.stdout.write(f"Case set {DEMO_CASE_SET}: {report.imported} generated cases to fine-tune on "
                          "(Admin → Training runs → Start a training run).")
