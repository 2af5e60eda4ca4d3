from django.urls import path

from cases import views

app_name = "cases"
urlpatterns = [
    path("", views.case_list, name="list"),
    path("new/", views.case_create, name="create"),
    path("<int:pk>/", views.case_detail, name="detail"),
    path("<int:pk>/reveal/", views.case_reveal, name="reveal"),
    path("<int:pk>/analyse/", views.case_reanalyse, name="reanalyse"),
    path("<int:pk>/facts/", views.case_facts, name="facts"),
    path("analyses/<int:pk>/", views.analysis_detail, name="analysis"),
    path("analyses/<int:pk>/feedback/", views.analysis_feedback, name="analysis-feedback"),
]
