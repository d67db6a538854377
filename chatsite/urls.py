from django.contrib import admin
from django.urls import include, path

from chat import api, views

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", views.healthz, name="healthz"),
    path("status", views.status, name="status"),
    path("metrics", views.metrics_view, name="metrics"),
    path("v1/chat/completions", api.chat_completions, name="chat-completions"),
    path("v1/models", api.models, name="models"),
    path("generate", api.generate, name="generate"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
]
