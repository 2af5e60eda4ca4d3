"""REST API of the reviewer's work under /api/v1/reviews/: the queue, one item (blinded), draft and submission."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from cases.views import client_addr
from evaluation import selectors, services
from evaluation.models import ReviewAssignment
from evaluation.services import OVERALL, ReviewInput


class AssignmentListSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    answers = serializers.IntegerField(source="answer_count", help_text="1, or 2 for an A/B comparison.")
    language = serializers.CharField(source="item.language")

    class Meta:
        model = ReviewAssignment
        fields = ["id", "url", "status", "due_date", "language", "answers", "assigned_at", "submitted_at"]

    def get_url(self, assignment) -> str:
        return self.context["request"].build_absolute_uri(reverse("api-review-detail", args=[assignment.pk]))


class ReviewListApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=["open", "done"], description="open (default) or done")],
        responses=AssignmentListSerializer(many=True),
    )
    def get(self, request):
        done = request.query_params.get("status", "open") == "done"
        assignments = selectors.assignment_queue(user=request.user, done=done)
        return Response(AssignmentListSerializer(assignments, many=True, context={"request": request}).data)


_score = serializers.IntegerField(min_value=1, max_value=5, allow_null=True, required=False)


class ReviewInputSerializer(serializers.Serializer):
    ratings = serializers.DictField(
        child=serializers.DictField(child=_score),
        help_text='Per answer label ("A", "B") a 1–5 score per rubric dimension key and "overall".',
    )
    preference = serializers.ChoiceField(choices=ReviewAssignment.Preference.choices, required=False, allow_blank=True,
                                         help_text="With two answers: A, B or tie.")
    corrected_diagnosis = serializers.CharField(required=False, allow_blank=True, max_length=300)
    corrected_treatment = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    accept_for_training = serializers.BooleanField(required=False, default=False)

    def to_input(self) -> ReviewInput:
        data = self.validated_data
        return ReviewInput(
            ratings={label: dict(scores) for label, scores in data["ratings"].items()},
            preference=data.get("preference", ""), corrected_diagnosis=data.get("corrected_diagnosis", ""),
            corrected_treatment=data.get("corrected_treatment", ""), comment=data.get("comment", ""),
            accept_for_training=data.get("accept_for_training", False),
        )


def _detail(assignment: ReviewAssignment, request) -> dict:
    """What the reviewer sees: the de-identified case, blinded answers, the rubric with anchors, their own scores."""
    language = request.LANGUAGE_CODE if hasattr(request, "LANGUAGE_CODE") else "en"
    return {
        "id": assignment.pk,
        "status": assignment.status,
        "due_date": assignment.due_date,
        "language": assignment.item.language,
        "case_text": assignment.item.case_text,
        "answers": [
            {"label": label, "diagnosis": a.diagnosis, "differential": a.differential, "treatment": a.treatment,
             "prognosis": a.prognosis, "rationale": a.rationale}
            for label, a in services.blinded_answers(assignment)
        ],
        "rubric": {
            "name": str(assignment.rubric),
            "dimensions": [
                {"key": d.key, "name": d.name(language), "anchors": {str(s): t for s, t in d.anchors(language)}}
                for d in assignment.rubric.dimensions.all()
            ] + [{"key": OVERALL, "name": "Overall", "anchors": {}}],
        },
        "ratings": selectors.assignment_ratings(assignment),
        "preference": assignment.preference,
        "corrected_diagnosis": assignment.corrected_diagnosis,
        "corrected_treatment": assignment.corrected_treatment,
        "comment": assignment.comment,
        "accept_for_training": assignment.accept_for_training,
        "submitted_at": assignment.submitted_at,
    }


ReviewDetailSerializer = inline_serializer("ReviewDetail", fields={
    "id": serializers.IntegerField(), "status": serializers.CharField(), "due_date": serializers.DateField(allow_null=True),
    "language": serializers.CharField(), "case_text": serializers.CharField(),
    "answers": serializers.ListField(child=serializers.DictField()), "rubric": serializers.DictField(),
    "ratings": serializers.DictField(), "preference": serializers.CharField(),
    "corrected_diagnosis": serializers.CharField(), "corrected_treatment": serializers.CharField(),
    "comment": serializers.CharField(), "accept_for_training": serializers.BooleanField(),
    "submitted_at": serializers.DateTimeField(allow_null=True),
})


def _save(request, pk: int, *, submit: bool) -> Response:
    assignment = selectors.assignment_get(user=request.user, pk=pk)
    serializer = ReviewInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    try:
        services.review_save(reviewer=request.user, assignment=assignment, data=serializer.to_input(), submit=submit,
                             remote_addr=client_addr(request))
    except services.ReviewAlreadySubmitted as error:
        return Response({"detail": " ".join(error.messages)}, status=status.HTTP_409_CONFLICT)
    except DjangoValidationError as error:
        raise ValidationError(error.message_dict if hasattr(error, "error_dict") else {"detail": error.messages}) from None
    assignment = selectors.assignment_get(user=request.user, pk=pk)
    return Response(_detail(assignment, request))


class ReviewDetailApi(APIView):
    @extend_schema(responses=ReviewDetailSerializer)
    def get(self, request, pk: int):
        assignment = selectors.assignment_get(user=request.user, pk=pk)
        services.review_open(reviewer=request.user, assignment=assignment, remote_addr=client_addr(request))
        return Response(_detail(assignment, request))

    @extend_schema(request=ReviewInputSerializer, responses={200: ReviewDetailSerializer},
                   description="Save a draft: scores may be missing; out-of-range scores are refused (400).")
    def put(self, request, pk: int):
        return _save(request, pk, submit=False)


class ReviewSubmitApi(APIView):
    @extend_schema(request=ReviewInputSerializer, responses={200: ReviewDetailSerializer},
                   description="Submit once: 400 names each missing score (the draft is kept); 409 if already submitted.")
    def post(self, request, pk: int):
        return _save(request, pk, submit=True)
