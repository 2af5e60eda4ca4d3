"""The datasets that training can use: case sets, exported to the JSONL that training reads.

evaluation's training orchestration (evaluation.services.training_run_start, behind the admin's "Start a training
run") offers `choices()` and calls `export()`; modeling only ever sees the exported files.
"""

from pathlib import Path

from django.db.models import Count
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from cases.models import CaseSet
from cases.services import case_set_export

KEY_PREFIX = "caseset:"


def choices() -> list[tuple[str, str]]:
    """("caseset:<pk>", "<name> (<n> cases)") for every case set that has cases, newest first."""
    sets = CaseSet.objects.annotate(size=Count("cases")).filter(size__gt=0).order_by("-created_at", "-id")
    return [(f"{KEY_PREFIX}{case_set.pk}", _label(case_set.name, case_set.size)) for case_set in sets]


def _label(name: str, count: int) -> str:
    return ngettext("%(name)s (%(count)d case)", "%(name)s (%(count)d cases)", count) % {"name": name, "count": count}


def export(key: str, directory: Path, *, actor=None) -> tuple[Path, str]:
    """Write the case set named by `key` to directory/"<name>.jsonl"; return (path, description). Audited.

    ValueError, with a message for the admin, when the key names no case set or an empty one.
    """
    case_set = _case_set(key)
    path = Path(directory) / f"{case_set.name}.jsonl"
    count = case_set_export(case_set=case_set, path=path, actor=actor)
    if not count:  # emptied between choosing and starting
        raise ValueError(_("Case set “%(name)s” has no cases.") % {"name": case_set.name})
    description = ngettext("case set %(name)s, %(count)d case", "case set %(name)s, %(count)d cases", count) % {
        "name": case_set.name, "count": count,
    }
    return path, description


def _case_set(key: str) -> CaseSet:
    pk = key.removeprefix(KEY_PREFIX) if isinstance(key, str) and key.startswith(KEY_PREFIX) else ""
    if not pk.isdigit():
        raise ValueError(_("Unknown dataset “%(key)s”: expected “caseset:<id>”.") % {"key": key})
    case_set = CaseSet.objects.filter(pk=int(pk)).first()
    if case_set is None:
        raise ValueError(_("Unknown dataset “%(key)s”: there is no case set #%(pk)s.") % {"key": key, "pk": pk})
    if not case_set.cases.exists():
        raise ValueError(_("Case set “%(name)s” has no cases.") % {"name": case_set.name})
    return case_set
