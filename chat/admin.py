"""The reviewers' view: conversations with their whole transcript, read-only by default."""
import csv
import io
import json

from django.conf import settings
from django.contrib import admin
from django.db.models import Count
from django.http import HttpResponse

from django.contrib import messages as admin_messages

from .models import ApiKey, Conversation, Message

MESSAGE_FIELDS = [
    "id", "role", "content", "finish_reason", "error_detail", "superseded", "prompt_tokens",
    "completion_tokens", "time_to_first_token_ms", "generation_ms", "model_name", "params",
    "rating", "feedback", "created",
]


class ReadOnlyUnlessConfigured:
    """Reviewers read history; they do not rewrite it (CHAT_ADMIN_READ_ONLY=false lifts this)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return not settings.CHAT_ADMIN_READ_ONLY and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not settings.CHAT_ADMIN_READ_ONLY and super().has_delete_permission(request, obj)


class MessageInline(ReadOnlyUnlessConfigured, admin.TabularInline):
    model = Message
    fields = readonly_fields = [
        "id", "created", "role", "content", "finish_reason", "superseded", "prompt_tokens",
        "completion_tokens", "time_to_first_token_ms", "generation_ms", "rating", "feedback",
    ]
    ordering = ["id"]
    extra = 0
    can_delete = False


class OwnerKindFilter(admin.SimpleListFilter):
    title = "owner kind"
    parameter_name = "owner_kind"

    def lookups(self, request, model_admin):
        return [("user", "Signed-in users"), ("guest", "Guests")]

    def queryset(self, request, queryset):
        if self.value() == "user":
            return queryset.filter(user__isnull=False)
        if self.value() == "guest":
            return queryset.filter(user__isnull=True)
        return queryset


class RatingFilter(admin.SimpleListFilter):
    title = "replies rated"
    parameter_name = "rated"

    def lookups(self, request, model_admin):
        return [("down", "Has a thumbs-down"), ("up", "Has a thumbs-up")]

    def queryset(self, request, queryset):
        rating = {"down": -1, "up": 1}.get(self.value())
        return queryset.filter(messages__rating=rating).distinct() if rating else queryset


def _export_rows(conversations):
    for conversation in conversations.prefetch_related("messages"):
        for message in conversation.messages.all():
            row = {"conversation": conversation.pk, "title": conversation.title,
                   "owner": str(conversation.user) if conversation.user_id else f"guest:{conversation.guest_key[:8]}"}
            row.update({field: getattr(message, field) for field in MESSAGE_FIELDS})
            row["created"] = message.created.isoformat()
            yield row


@admin.action(description="Export selected conversations as CSV")
def export_csv(modeladmin, request, queryset):
    buffer = io.StringIO()
    writer = None
    for row in _export_rows(queryset):
        if writer is None:
            writer = csv.DictWriter(buffer, fieldnames=list(row))
            writer.writeheader()
        writer.writerow({k: _spreadsheet_safe(json.dumps(v) if isinstance(v, dict) else v) for k, v in row.items()})
    response = HttpResponse(buffer.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="conversations.csv"'
    return response


def _spreadsheet_safe(value):
    """A cell a spreadsheet would run as a formula (=, +, -, @, or a tab/CR first) is kept as text
    with a leading apostrophe (OWASP's advice against CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@admin.action(description="Export selected conversations as JSONL")
def export_jsonl(modeladmin, request, queryset):
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in _export_rows(queryset))
    response = HttpResponse(lines, content_type="application/x-ndjson")
    response["Content-Disposition"] = 'attachment; filename="conversations.jsonl"'
    return response


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyUnlessConfigured, admin.ModelAdmin):
    list_display = ["id", "title", "owner_display", "model_name", "message_count", "created", "updated"]
    list_filter = [("created", admin.DateFieldListFilter), OwnerKindFilter, "user", "model_name", RatingFilter]
    search_fields = ["title", "messages__content", "user__username", "guest_key"]
    date_hierarchy = "created"
    readonly_fields = ["user", "guest_key", "title", "model_name", "created", "updated"]
    inlines = [MessageInline]
    actions = [export_csv, export_jsonl]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user").annotate(message_count=Count("messages"))

    @admin.display(description="owner")
    def owner_display(self, obj):
        return str(obj.user) if obj.user_id else f"guest {obj.guest_key[:8]}"

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj):
        return obj.message_count


@admin.register(Message)
class MessageAdmin(ReadOnlyUnlessConfigured, admin.ModelAdmin):
    list_display = ["id", "conversation", "role", "short_content", "finish_reason", "rating", "completion_tokens",
                    "time_to_first_token_ms", "created"]
    list_filter = ["role", "finish_reason", "rating", "superseded", "model_name", ("created", admin.DateFieldListFilter)]
    search_fields = ["content", "feedback"]
    readonly_fields = MESSAGE_FIELDS + ["conversation"]
    list_select_related = ["conversation"]

    @admin.display(description="content")
    def short_content(self, obj):
        return obj.content[:80]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "user", "active", "created", "last_used"]
    list_filter = ["active"]
    readonly_fields = ["prefix", "created", "last_used"]

    def get_readonly_fields(self, request, obj=None):
        # A key's conversations belong to its user: moving an issued key to someone else would
        # hand them to the new user's history, so the user is fixed once the key exists.
        return self.readonly_fields + (["user"] if obj is not None else [])

    def save_model(self, request, obj, form, change):
        raw_key = None if change else obj.issue()
        super().save_model(request, obj, form, change)
        if raw_key:
            self.message_user(request, f"The new API key is {raw_key} — copy it now, it is not shown again.",
                              admin_messages.WARNING)
