from django.urls import path

from evaluation import views

app_name = "reviews"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("next/", views.next_review, name="next"),
    path("<int:pk>/", views.review, name="review"),
    path("corrections/<int:pk>/", views.correction_decide, name="correction-decide"),
]
