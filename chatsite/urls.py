from django.contrib import admin
from django.urls import include, path

from chat import api, conversation_views, views

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", views.healthz, name="healthz"),
    path("status", views.status, name="status"),
    path("metrics", views.metrics_view, name="metrics"),
    path("v1/chat/completions", api.chat_completions, name="chat-completions"),
    path("v1/models", api.models, name="models"),
    path("generate", api.generate, name="generate"),
    path("conversations/<int:conversation_id>/export.md", conversation_views.export_markdown, name="export-markdown"),
    path("conversations/<int:conversation_id>/export.json", conversation_views.export_json, name="export-json"),
    path("conversations/import", conversation_views.import_json, name="import"),
    path("conversations/<int:conversation_id>/share", conversation_views.share, name="share"),
    path("shared/<str:token>", conversation_views.shared, name="shared"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
]
