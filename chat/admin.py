"""The reviewers' view: conversations with their whole transcript, read-only by default; a review
queue (filters, a reviewed mark with a note), exports, and a dashboard of the service's days."""
from django.conf import settings
from django.contrib import admin
from django.contrib import messages as admin_messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponseNotAllowed, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from . import dashboard, exports
from .admin_transcript import transcript
from .formatting import format_seconds
from .models import ApiKey, Conversation, Message

REVIEW_NOTE_CHARS = 5000


class ReadOnlyUnlessConfigured:
    """Reviewers read history; they do not rewrite it (CHAT_ADMIN_READ_ONLY=false lifts this).
    The reviewed mark is apart from this: see ConversationAdmin.review_view."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return not settings.CHAT_ADMIN_READ_ONLY and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not settings.CHAT_ADMIN_READ_ONLY and super().has_delete_permission(request, obj)


class OwnerKindFilter(admin.SimpleListFilter):
    title = "owner kind"
    parameter_name = "owner_kind"

    def lookups(self, request, model_admin):
        return [("user", "Signed-in users"), ("guest", "Guests"),
                ("api", f"API calls (kept {settings.CHAT_API_RETENTION_DAYS} days)")]

    def queryset(self, request, queryset):
        if self.value() == "api":
            return queryset.filter(api_key__isnull=False)
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
        return queryset.with_replies(rating=rating) if rating else queryset


class ReplyOutcomeFilter(admin.SimpleListFilter):
    title = "replies ended"
    parameter_name = "ended"
    OUTCOMES = {"error": Message.FinishReason.ERROR, "stopped": Message.FinishReason.CANCELLED,
                "length": Message.FinishReason.LENGTH}

    def lookups(self, request, model_admin):
        return [("error", "With an error"), ("stopped", "Stopped by the user"), ("length", "Cut at the length limit")]

    def queryset(self, request, queryset):
        reason = self.OUTCOMES.get(self.value())
        return queryset.with_replies(finish_reason=reason) if reason else queryset


class RecentValuesFilter(admin.SimpleListFilter):
    """Filter on a column by the values of the newest rows: Django's own (AllValuesFieldListFilter) runs
    SELECT DISTINCT over the whole table on every page. Any value still filters (?<field>=value in the
    URL); only the choices offered come from the newest RECENT_ROWS rows (read through the primary key)."""

    field = ""
    RECENT_ROWS = 1000

    def lookups(self, request, model_admin):
        recent = model_admin.model.objects.order_by("-pk").values_list(self.field, flat=True)[:self.RECENT_ROWS]
        return [(value, value) for value in sorted(set(recent)) if value]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


def recent_values(field, title=None):
    return type(f"Recent{field.title()}Filter", (RecentValuesFilter,),
                {"field": field, "parameter_name": field, "title": title or field.replace("_", " ")})


class ReviewedFilter(admin.SimpleListFilter):
    title = "review"
    parameter_name = "reviewed"

    def lookups(self, request, model_admin):
        return [("no", "Not reviewed"), ("yes", "Reviewed")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.reviewed(self.value() == "yes")
        return queryset


@admin.action(description="Export selected conversations as CSV")
def export_csv(modeladmin, request, queryset):
    return _download(exports.as_csv(queryset), "text/csv", "conversations.csv")


@admin.action(description="Export selected conversations as JSONL")
def export_jsonl(modeladmin, request, queryset):
    return _download(exports.as_jsonl(exports.message_rows(queryset)), "application/x-ndjson", "conversations.jsonl")


@admin.action(description="Export selected conversations for fine-tuning (JSONL, active branch only)")
def export_fine_tuning(modeladmin, request, queryset):
    return _download(exports.as_jsonl(exports.fine_tuning_examples(queryset)), "application/x-ndjson",
                     "fine-tuning.jsonl")


def _download(content, content_type, filename):
    response = StreamingHttpResponse(content, content_type=content_type)  # never whole in memory
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyUnlessConfigured, admin.ModelAdmin):
    list_display = ["id", "title", "owner_display", "model_name", "message_count", "reviewed", "created", "updated"]
    # No filter here reads the whole of a table per page: no DISTINCT, no per-user list (search the
    # owner's name instead), no date hierarchy (the "created" filter covers it).
    list_filter = [ReviewedFilter, RatingFilter, ReplyOutcomeFilter, recent_values("model_name", "model"),
                   ("created", admin.DateFieldListFilter), OwnerKindFilter]
    search_fields = ["title", "user__username", "guest_key"]  # and the messages' text: get_search_results
    fields = readonly_fields = ["user", "guest_key", "api_key", "title", "model_name", "created", "updated"]
    actions = [export_csv, export_jsonl, export_fine_tuning]

    def get_queryset(self, request):
        # A subquery per listed row, not a GROUP BY over every message under each of the page's queries.
        count = (Message.objects.filter(conversation=OuterRef("pk")).order_by().values("conversation")
                 .annotate(n=Count("pk")).values("n"))
        return super().get_queryset(request).select_related("user").annotate(message_count=Coalesce(Subquery(count), 0))

    def get_search_results(self, request, queryset, search_term):
        """Title, owner, or any message's text; matched through a subquery, so no DISTINCT is needed."""
        queryset, _ = super().get_search_results(request, queryset, search_term)
        if search_term:
            in_messages = self.model.objects.filter(
                pk__in=Message.objects.filter(content__icontains=search_term).values("conversation_id"))
            queryset = queryset | self.get_queryset(request).filter(pk__in=in_messages.values("pk"))
        return queryset, False

    @admin.display(description="owner")
    def owner_display(self, obj):
        if obj.api_key_id:
            return f"{obj.user} (API key {obj.api_key_id})"
        return str(obj.user) if obj.user_id else f"guest {obj.guest_key[:8]}"

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj):
        return obj.message_count

    @admin.display(description="reviewed", boolean=True, ordering="reviewed_at")
    def reviewed(self, obj):
        return obj.reviewed_at is not None

    def has_review_permission(self, request, obj=None):
        """May mark conversations reviewed (with a note): allowed while the admin is read-only."""
        return request.user.is_active and request.user.is_staff and request.user.has_perm("chat.review_conversation")

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("dashboard/", view(self.dashboard_view), name="chat_dashboard"),
            path("<path:object_id>/review/", view(self.review_view), name="chat_conversation_review"),
        ] + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        conversation = self.get_object(request, unquote(object_id))
        extra_context = dict(extra_context or {})
        if conversation is not None:
            extra_context.update({
                "transcript": transcript(conversation),
                "can_review": self.has_review_permission(request, conversation),
                "review_url": reverse("admin:chat_conversation_review", args=[conversation.pk]),
            })
        return super().change_view(request, object_id, form_url, extra_context)

    def review_view(self, request, object_id):
        """Mark the conversation reviewed with a note (or not reviewed), back to its page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        conversation = self.get_object(request, unquote(object_id))
        if conversation is None:
            raise Http404("no such conversation")
        if not self.has_review_permission(request, conversation):
            raise PermissionDenied
        if request.POST.get("reviewed") == "0":
            conversation.clear_review()
            done = "Marked not reviewed"
        else:
            note = request.POST.get("note", "").strip()[:REVIEW_NOTE_CHARS]
            conversation.mark_reviewed(request.user, note)
            done = "Marked reviewed" + (f": {note}" if note else "")
        self.log_change(request, conversation, done)
        self.message_user(request, f"{done}.", admin_messages.SUCCESS)
        return redirect("admin:chat_conversation_change", conversation.pk)

    def dashboard_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            days = min(dashboard.MAX_DAYS, max(1, int(request.GET.get("days", dashboard.DEFAULT_DAYS))))
        except ValueError:
            days = dashboard.DEFAULT_DAYS
        context = {**self.admin_site.each_context(request), "title": "Service dashboard", "days": days,
                   "day_choices": [7, 14, 30, 90], **dashboard.charts(dashboard.figures(days))}
        return TemplateResponse(request, "admin/chat/dashboard.html", context)


@admin.register(Message)
class MessageAdmin(ReadOnlyUnlessConfigured, admin.ModelAdmin):
    list_display = ["id", "conversation", "role", "short_content", "finish_reason_display", "rating", "model_name",
                    "worker", "completion_tokens", "first_token", "created"]
    list_filter = ["role", "finish_reason", "rating", "superseded", recent_values("model_name", "model"),
                   recent_values("worker"), recent_values("device"), recent_values("precision"),
                   ("created", admin.DateFieldListFilter)]
    search_fields = ["content", "feedback"]
    readonly_fields = exports.MESSAGE_FIELDS + ["conversation"]
    list_select_related = ["conversation"]

    @admin.display(description="content")
    def short_content(self, obj):
        return obj.content[:80]

    @admin.display(description="finish reason", ordering="finish_reason")
    def finish_reason_display(self, obj):
        return obj.get_finish_reason_display() if obj.role == Message.Role.ASSISTANT else "–"

    @admin.display(description="first token", ordering="time_to_first_token_ms")
    def first_token(self, obj):
        return format_seconds(obj.time_to_first_token_ms)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "user", "active", "max_in_flight", "requests_per_minute", "tokens_per_minute",
                    "created", "last_used"]
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
