"""REST API for cases: thin views with their own input and output serializers."""

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from cases import selectors, services
from cases.models import AccessEvent, Analysis, Case, Department
from cases.views import client_addr
from modeling.models import ModelVersion
from modeling.runtime import GenerationParams
from modeling.selectors import model_version_by_name


class StrictCharField(serializers.CharField):
    """Text only: DRF's CharField would turn 123 or true into "123" / "True"; a number where a case goes is a 400."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _text(limit: int | None = None, help_text: str = ""):
    return StrictCharField(
        required=False, allow_blank=True, max_length=limit or settings.MEDPORTAL_MAX_FIELD_CHARS, help_text=help_text
    )


class CaseInputSerializer(serializers.Serializer):
    sex = serializers.ChoiceField(choices=Case.Sex.choices, default=Case.Sex.UNKNOWN)
    age = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=130)
    department = serializers.ChoiceField(choices=Department.choices, required=False, allow_blank=True)
    chief_complaint = _text(help_text="主诉. A case needs a chief complaint or free_text.")
    present_illness = _text(help_text="现病史")
    past_history = _text(help_text="既往史")
    physical_exam = _text(help_text="体格检查")
    tests_imaging = _text(help_text="辅助检查")
    free_text = _text(settings.MEDPORTAL_MAX_FREE_TEXT_CHARS, help_text="One pasted free-text record.")

    def to_input(self) -> services.CaseInput:
        data = dict(self.validated_data)
        return services.CaseInput(
            sex=data.pop("sex"), age=data.pop("age", None), department=data.pop("department", ""), texts=data
        )


class CaseOutputSerializer(serializers.ModelSerializer):
    """A case as stored: de-identified text only; the originals never leave through the API."""

    url = serializers.HyperlinkedIdentityField(view_name="api-case-detail")
    age = serializers.SerializerMethodField(help_text="Ages over 89 are reported as '≥90'.")
    status = serializers.SerializerMethodField(
        help_text="As the case page shows it: the latest analysis's status (queued, running, done, failed), else submitted.")
    analyses = serializers.HyperlinkedRelatedField(view_name="api-analysis-detail", many=True, read_only=True,
                                                   help_text="The case's analyses, newest first.")
    red_flags = serializers.SerializerMethodField(
        help_text="Urgent findings the note shows by rule, whatever the model says: [{id, name, quotes}].")

    class Meta:
        model = Case
        fields = [
            "id", "url", "language", "sex", "age", "department", "chief_complaint", "present_illness",
            "past_history", "physical_exam", "tests_imaging", "free_text", "phi_count", "status", "analyses", "red_flags",
            "created_at",
        ]

    def get_age(self, case: Case) -> str | None:
        return case.age_display or None

    def get_status(self, case: Case) -> str:
        return case.progress[0]

    def get_red_flags(self, case: Case) -> list[dict]:
        return [{"id": flag.id, "name": flag.name, "quotes": list(flag.quotes)} for flag in case.red_flags]


class CaseListCreateApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("q", str, description="Search phrase"), OpenApiParameter("page", int)],
        responses=CaseOutputSerializer(many=True),
    )
    def get(self, request):
        # Each case links its analyses: their ids in one query for the page, not one per case.
        cases = selectors.case_list(user=request.user, query=request.query_params.get("q", "")).prefetch_related(
            Prefetch("analyses", queryset=Analysis.objects.only("pk", "case_id").order_by("-queued_at", "-id")))
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(cases, request, view=self)
        services.access_record(
            user=request.user, action=AccessEvent.Action.API_CASE_LIST, cases=page, remote_addr=client_addr(request)
        )
        return paginator.get_paginated_response(CaseOutputSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(request=CaseInputSerializer, responses={201: CaseOutputSerializer},
                   description="Saves the de-identified case and queues its analysis by the active model version, as the "
                   "web form does; without an active version the response says so in `analysis_note`.")
    def post(self, request):
        serializer = CaseInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            # As the web form does: the case is saved and its analysis queued by the active version.
            case, analysis = services.case_submit(author=request.user, data=serializer.to_input(),
                                                  remote_addr=client_addr(request))
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from None
        case = selectors.case_get(user=request.user, pk=case.pk)
        output = dict(CaseOutputSerializer(case, context={"request": request}).data)
        if analysis is None:
            output["analysis_note"] = "No model version is active, so no analysis was started."
        return Response(output, status=status.HTTP_201_CREATED)


class CaseDetailApi(APIView):
    @extend_schema(responses=CaseOutputSerializer)
    def get(self, request, pk: int):
        case = selectors.case_get(user=request.user, pk=pk)
        services.access_record(
            user=request.user, action=AccessEvent.Action.API_CASE_READ, cases=[case], remote_addr=client_addr(request)
        )
        return Response(CaseOutputSerializer(case, context={"request": request}).data)


class AnalyzeInputSerializer(serializers.Serializer):
    text = StrictCharField(max_length=settings.MEDPORTAL_MAX_FREE_TEXT_CHARS, help_text="The case, Chinese or English.")
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=1024, default=256)
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, default=0.0)
    top_p = serializers.FloatField(min_value=0.0, max_value=1.0, default=1.0, help_text="In (0, 1].")
    model_version = serializers.CharField(required=False, help_text="A version name; the active version by default.")
    wait = serializers.BooleanField(default=False, help_text="Wait (a bounded time) for the answer.")

    def validate_top_p(self, value: float) -> float:
        if value <= 0:
            raise serializers.ValidationError("top_p must be greater than 0.")
        return value

    def validate_model_version(self, value: str) -> ModelVersion:
        version = model_version_by_name(value)
        if version is None:
            raise serializers.ValidationError(f"No model version named {value!r}.")
        return version


class AnalysisOutputSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-analysis-detail")
    case = serializers.HyperlinkedRelatedField(view_name="api-case-detail", read_only=True)
    model_version = serializers.SlugRelatedField(slug_field="name", read_only=True)
    disclaimer = serializers.CharField(read_only=True)

    class Meta:
        model = Analysis
        fields = [
            "id", "url", "case", "model_version", "status", "diagnosis", "differential", "treatment", "prognosis",
            "rationale", "disclaimer", "quality", "ranking_disagrees", "diagnosis_from_ranking", "needs_review", "excluded",
            "grounding", "uncertain", "error",
            "queued_at", "started_at", "finished_at",
        ]


class AnalyzeApi(APIView):
    @extend_schema(request=AnalyzeInputSerializer, responses={200: AnalysisOutputSerializer, 202: AnalysisOutputSerializer})
    def post(self, request):
        serializer = AnalyzeInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        params = GenerationParams(max_new_tokens=data["max_new_tokens"], temperature=data["temperature"], top_p=data["top_p"])
        try:
            analysis = services.text_analyze(
                author=request.user, text=data["text"], version=data.get("model_version"), params=params,
                remote_addr=client_addr(request),
            )
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from None
        if data["wait"]:
            analysis = services.analysis_wait(analysis=analysis, seconds=settings.MEDPORTAL_ANALYZE_WAIT_SECONDS)
        output = AnalysisOutputSerializer(analysis, context={"request": request}).data
        return Response(output, status=status.HTTP_200_OK if analysis.is_finished else status.HTTP_202_ACCEPTED)


class AnalysisDetailApi(APIView):
    @extend_schema(responses=AnalysisOutputSerializer)
    def get(self, request, pk: int):
        analysis = selectors.analysis_get(user=request.user, pk=pk)
        services.access_record(
            user=request.user, action=AccessEvent.Action.API_CASE_READ, cases=[analysis.case],
            remote_addr=client_addr(request),
        )
        return Response(AnalysisOutputSerializer(analysis, context={"request": request}).data)
