from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from cases.models import TEXT_FIELDS, Case, Department
from cases.services import CaseInput


def _text(label, rows=3, *, limit=None, placeholder=""):
    return forms.CharField(
        label=label,
        required=False,
        max_length=limit or settings.MEDPORTAL_MAX_FIELD_CHARS,
        strip=True,
        widget=forms.Textarea(attrs={"rows": rows, "placeholder": placeholder}),
    )


class CaseForm(forms.Form):
    """The structured intake form. Validation beyond single fields lives in cases.services.case_create."""

    sex = forms.ChoiceField(label=_("Sex"), choices=Case.Sex.choices, initial=Case.Sex.UNKNOWN, required=False)
    age = forms.IntegerField(label=_("Age"), required=False, min_value=0, max_value=130)
    department = forms.ChoiceField(label=_("Department"), required=False, choices=[("", "—")] + Department.choices)
    chief_complaint = _text(_("Chief complaint (主诉)"), 2, placeholder=_("e.g. chest pain for 2 hours"))
    present_illness = _text(_("Present illness (现病史)"), 5)
    past_history = _text(_("Past history (既往史)"), 3)
    physical_exam = _text(_("Physical exam (体格检查)"), 3)
    tests_imaging = _text(_("Tests and imaging (辅助检查)"), 3)
    free_text = _text(
        _("Or paste the whole record"),
        8,
        limit=settings.MEDPORTAL_MAX_FREE_TEXT_CHARS,
        placeholder=_("A complete free-text record, if you have one instead of the sections above."),
    )

    def to_input(self) -> CaseInput:
        data = self.cleaned_data
        return CaseInput(
            sex=data["sex"] or Case.Sex.UNKNOWN,
            age=data["age"],
            department=data["department"],
            texts={name: data[name] for name in TEXT_FIELDS},
        )


class DoctorFeedbackForm(forms.Form):
    """The doctor's rating of an analysis of their own case."""

    helpful = forms.ChoiceField(
        label=_("Was this analysis helpful?"), choices=[("yes", _("Helpful")), ("no", _("Not helpful"))],
        error_messages={"required": _("Choose helpful or not helpful.")},
    )
    correct_diagnosis = forms.CharField(label=_("Correct diagnosis (optional)"), required=False, max_length=300)
