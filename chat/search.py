"""Search over one owner's conversations: their titles and the text of their active messages.

The database does the matching, through the full-text index of migration 0005 (SQLite: FTS5
tables kept by triggers; PostgreSQL: GIN indexes over to_tsvector('simple', ...)). Every word
of the query must match the start of a word in the text ("pyth" finds "Python"), so results can
follow the user's typing; a word of one or two characters must match a whole word ("a" finds "a",
not every word that starts with "a": such a prefix expands to a large part of the index, over every
user's messages; bench.search_speed measures it). The snippet around the match is cut here, in
Python, as plain text split into segments (matched or not): clients render it as text, so message
text can never become markup.
"""
import importlib
import re
import unicodedata

from django.db import connection
from django.db.models import Max
from django.db.models.expressions import RawSQL

from .models import Conversation, Message

MAX_QUERY_CHARS = 200
MAX_TERMS = 8
MAX_RESULTS = 20
SNIPPET_CHARS = 120
SNIPPET_LEAD = 40  # characters shown before the first match
MIN_PREFIX_CHARS = 3  # shorter words of a query match whole words only

# A word as both indexes see one: letters and digits (underscore and punctuation separate words).
WORD = re.compile(r"[^\W_]+")

def terms_of(query):
    """The words of a query that the search uses (lower-cased, at most MAX_TERMS)."""
    return [term.lower() for term in WORD.findall(query[:MAX_QUERY_CHARS])][:MAX_TERMS]


def search(owner, query, limit=MAX_RESULTS):
    """The owner's conversations matching every word of `query` in their title or in one active
    message, most recently active first: [{conversation, title, snippet, message?}] where
    snippet is [{text, match}] and message is the id of the matching message (absent when only
    the title matched)."""
    terms = terms_of(query)
    if not terms:
        return []
    owned = Conversation.objects.owned_by(owner)
    by_title = owned.filter(pk__in=_matching_ids("chat_conversation", "title", terms)).order_by("-updated")[:limit]
    # The most recent matching active message of each conversation stands for it.
    latest = (Message.objects.filter(conversation__in=owned, superseded=False)
              .filter(pk__in=_matching_ids("chat_message", "content", terms))
              .values("conversation_id").annotate(latest=Max("id")).order_by("-conversation__updated")[:limit])
    messages = Message.objects.filter(pk__in=[row["latest"] for row in latest]).select_related("conversation")
    items = {}
    for message in messages:
        conversation = message.conversation
        items[conversation.pk] = (conversation.updated, {
            "conversation": conversation.pk, "title": str(conversation),
            "snippet": snippet(message.content, terms), "message": message.pk})
    for conversation in by_title:
        items.setdefault(conversation.pk, (conversation.updated, {
            "conversation": conversation.pk, "title": str(conversation),
            "snippet": snippet(str(conversation), terms)}))
    ranked = sorted(items.values(), key=lambda pair: pair[0], reverse=True)
    return [item for _, item in ranked[:limit]]


def _matching_ids(table, column, terms):
    """A subquery of the ids of rows of `table` whose indexed `column` has every term as a word prefix."""
    vendor = connection.vendor
    if vendor == "sqlite":
        # Each term quoted (it holds only letters and digits anyway), '*': a prefix match; spaces: AND.
        match = " ".join(f'"{term}"' + ("*" if _is_prefix(term) else "") for term in terms)
        return RawSQL(f"SELECT rowid FROM {table}_fts WHERE {table}_fts MATCH %s", [match])
    if vendor == "postgresql":
        match = " & ".join(term + (":*" if _is_prefix(term) else "") for term in terms)
        return RawSQL(f"SELECT id FROM {table} WHERE to_tsvector('simple', {column}) @@ to_tsquery('simple', %s)",
                      [match])
    raise NotImplementedError(f"search has no index for the {vendor} database")


def _is_prefix(term):
    return len(term) >= MIN_PREFIX_CHARS


def _fold(char):
    """A character without its accents, one for one (so positions in the folded text are the text's)."""
    base = unicodedata.normalize("NFD", char)[0]
    return base if len(base) == 1 else char


def snippet(text, terms, width=SNIPPET_CHARS, lead=SNIPPET_LEAD):
    """The part of `text` around the first match of a term, as [{text, match}] segments, where a
    match is a word that starts with a term, or is one that is too short to be a prefix (case and
    accents aside, as the SQLite index matches)."""
    text = " ".join(text.split())  # one line: newlines and runs of spaces would only waste the width
    folded = "".join(_fold(char) for char in text)
    folded_terms = sorted({"".join(_fold(c) for c in term) for term in terms}, key=len, reverse=True)
    # A word that starts with a term (or is a short one), highlighted whole.
    pattern = re.compile(r"(?<![^\W_])(?:" + "|".join(
        re.escape(term) + (r"[^\W_]*" if _is_prefix(term) else r"(?![^\W_])") for term in folded_terms) + ")",
        re.IGNORECASE)
    first = pattern.search(folded)
    start = 0
    if first and first.start() > lead:
        start = first.start() - lead
        space = text.find(" ", start, first.start())
        start = space + 1 if space != -1 else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", start + width // 2, end)
        end = space if space != -1 else end
    segments = []
    if start > 0:
        segments.append({"text": "…", "match": False})
    position = start
    for found in pattern.finditer(folded, start, end):
        if found.start() > position:
            segments.append({"text": text[position:found.start()], "match": False})
        segments.append({"text": text[found.start():min(found.end(), end)], "match": True})
        position = min(found.end(), end)
    if position < end:
        segments.append({"text": text[position:end], "match": False})
    if end < len(text):
        segments.append({"text": "…", "match": False})
    return _merged(segments)


def _merged(segments):
    merged = []
    for segment in segments:
        if merged and merged[-1]["match"] == segment["match"]:
            merged[-1]["text"] += segment["text"]
        elif segment["text"]:
            merged.append(segment)
    return merged


def ensure_index(using="default", **kwargs):
    """Put back the SQLite index's triggers where a later migration dropped them: Django rebuilds a
    SQLite table to alter it (new table, copy, drop, rename), and the triggers go with the old one.
    Run after every migrate (chat.apps); rebuilds the index when something was missing."""
    from django.db import connections

    target = connections[using]
    if target.vendor != "sqlite":
        return
    migration = importlib.import_module("chat.migrations.0005_search_and_sharing")
    with target.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger') AND name LIKE 'chat_%_fts%'")
        present = {row[0] for row in cursor.fetchall()}
        if not {"chat_message_fts", "chat_conversation_fts"} <= present:
            return  # migration 0005 has not run (or was reversed): nothing to keep
        expected = {"chat_message_fts_insert", "chat_message_fts_delete", "chat_message_fts_update",
                    "chat_conversation_fts_insert", "chat_conversation_fts_delete", "chat_conversation_fts_update"}
        if expected <= present:
            return
        for statement in migration.SQLITE_DROP:
            cursor.execute(statement)
        for statement in migration.SQLITE_CREATE:
            cursor.execute(statement)
