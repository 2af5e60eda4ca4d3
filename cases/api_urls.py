from django.urls import path

from cases import api

urlpatterns = [
    path("cases/", api.CaseListCreateApi.as_view(), name="api-case-list"),
    path("cases/<int:pk>/", api.CaseDetailApi.as_view(), name="api-case-detail"),
    path("analyze/", api.AnalyzeApi.as_view(), name="api-analyze"),
    path("analyses/<int:pk>/", api.AnalysisDetailApi.as_view(), name="api-analysis-detail"),
]
