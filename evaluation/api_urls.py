from django.urls import path

from evaluation import api

urlpatterns = [
    path("", api.ReviewListApi.as_view(), name="api-review-list"),
    path("<int:pk>/", api.ReviewDetailApi.as_view(), name="api-review-detail"),
    path("<int:pk>/submit/", api.ReviewSubmitApi.as_view(), name="api-review-submit"),
]
