"""Import a JSONL or CSV file of labelled cases into a named case set, de-identifying every row.

Columns (CSV header or JSON keys): text and diagnosis (required); treatment, prognosis, rationale,
differential, language (zh/en, detected when absent), id (the file's case id) and patient_id
(kept only as a keyed pseudonym) optional. See modeling/records.py for the format.
"""

import re
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from cases.services import CaseSetImportError, case_set_import, case_set_split

# Rejected lines printed in full; the import run in the admin keeps more.
MAX_PRINTED_ERRORS = 100


def default_set_name(path: Path) -> str:
    """The file's stem, made safe as a case set name ("dxy train (2).jsonl" -> "dxy-train-2")."""
    return re.sub(r"[^\w.-]+", "-", path.stem).strip("-.") or "imported"


def actor_named(username: str | None):
    """The user a command acts as (recorded in the audit trail), or None without --user; a CommandError if unknown."""
    if not username:
        return None
    try:
        return get_user_model().objects.get_by_natural_key(username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"No user named {username!r}.") from None


class Command(BaseCommand):
    help = "Import labelled cases (JSONL or CSV) into a case set; every row is de-identified on the way in."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="a .jsonl or .csv file with text and diagnosis columns")
        parser.add_argument("--set", dest="set_name", help="case set name (default: the file's name without extension)")
        parser.add_argument("--user", help="username of the ML admin doing the import (recorded in the audit trail)")
        parser.add_argument("--description", default="", help="description of the case set")
        parser.add_argument("--holdout", type=float, help="also split the set by patient into <set>-train and <set>-test, "
                                                          "this share held out (e.g. 0.2)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the --holdout split")

    def handle(self, *args, file: Path, set_name: str | None, user: str | None, description: str,
               holdout: float | None = None, seed: int = 0, **options):
        actor = actor_named(user)
        name = set_name or default_set_name(file)
        try:
            report = case_set_import(path=file, case_set=name, actor=actor, description=description)
        except CaseSetImportError as error:
            raise CommandError(f"{error}\nNothing was imported.") from None
        except ValidationError as error:
            raise CommandError(f"Case set {name!r}: {' '.join(error.messages)}") from None
        except PermissionDenied as error:
            raise CommandError(f"{user}: {error}") from None
        for line, reason in report.errors[:MAX_PRINTED_ERRORS]:
            self.stdout.write(f"line {line}: {reason}")
        if len(report.errors) > MAX_PRINTED_ERRORS:
            self.stdout.write(f"... and {len(report.errors) - MAX_PRINTED_ERRORS:,} more rejected lines (see the import run).")
        summary = (
            f"Case set {report.case_set.name}: imported {report.imported:,}, duplicates {report.duplicates:,}, "
            f"rejected {report.rejected:,} (of {report.rows:,} rows in {file.name}; import run #{report.import_run.pk})."
        )
        self.stdout.write(self.style.WARNING(summary) if report.rejected else self.style.SUCCESS(summary))
        if holdout is not None:
            try:
                train, test = case_set_split(case_set=report.case_set, test_fraction=holdout, seed=seed, actor=actor)
            except ValidationError as error:
                raise CommandError(f"Split: {' '.join(error.messages)}") from None
            self.stdout.write(self.style.SUCCESS(
                f"Split by patient: {train.name} ({train.cases.count():,} cases), {test.name} ({test.cases.count():,} cases)."))
