"""Search over one owner's conversations: their titles and the text of their active messages.

The owner's rows come first: the query starts from the owner's conversations and tests only their
messages, so one user's search costs what their own history holds, however many messages other
users have (a full-text index over everyone's text, read before the owner filter, made a one-letter
prefix cost hundreds of milliseconds on a large table). SQLite tests each row with chat_words_match
(a function registered on every connection, below); PostgreSQL with to_tsvector('simple', ...),
whose GIN index of migration 0005 its planner may still use. Every word of the query must match the
start of a word in the text ("pyth" finds "Python"), so results can follow the user's typing; a word
shorter than MIN_PREFIX_CHARS matches whole words only ("a" finds "a", not every word starting
with a). The snippet around the match is cut here, in Python, as plain text split into segments
(matched or not): clients render it as text, so message text can never become markup.
"""
import importlib
import re
import unicodedata

from django.db import connection
from django.db.models import BooleanField, F, Func, Max

from .models import Conversation, Message

MAX_QUERY_CHARS = 200
MAX_TERMS = 8
MAX_RESULTS = 20
SNIPPET_CHARS = 120
SNIPPET_LEAD = 40  # characters shown before the first match
MIN_PREFIX_CHARS = 3  # shorter words match whole words only

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
    by_title = owned.filter(_matches("title", terms)).order_by("-updated")[:limit]
    # The most recent matching active message of each conversation stands for it.
    latest = (_owned_messages(owner).filter(_matches("content", terms))
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


def _owned_messages(owner):
    """The owner's active messages, joined from their conversations (the plan starts there)."""
    prefix = {key: value for key, value in owner.filter().children}
    return Message.objects.filter(superseded=False, **{f"conversation__{key}": value for key, value in prefix.items()})


def explain(owner, query):
    """The database's plan of the message query (bench.search_speed and the tests read it)."""
    return _owned_messages(owner).filter(_matches("content", terms_of(query))).values("id").explain()


class _WordsMatch(Func):
    """SQLite: the column holds every term. LIKE (in C; case-blind for ASCII) passes only the rows
    worth testing to chat_words_match (Python, exact); a non-ASCII term, which LIKE would compare
    case-sensitively, goes to chat_words_match alone."""
    output_field = BooleanField()

    def __init__(self, column, terms):
        super().__init__(F(column))
        self.terms = terms

    def as_sql(self, compiler, connection, **extra):
        column, params = compiler.compile(self.source_expressions[0])
        ascii_terms = [term for term in self.terms if term.isascii()]  # letters and digits only: no LIKE wildcards
        conditions = [f"{column} LIKE %s" for _ in ascii_terms] + [f"chat_words_match({column}, %s)"]
        return "(" + " AND ".join(conditions) + ")", (
            *[value for term in ascii_terms for value in (*params, f"%{term}%")], *params, " ".join(self.terms))


class _TsMatch(Func):
    """PostgreSQL: the column's 'simple' text vector (the expression of migration 0005's GIN index)
    matches the query."""
    template = "to_tsvector('simple', %(expressions)s) @@ to_tsquery('simple', %(query)s)"
    output_field = BooleanField()

    def __init__(self, column, query):
        super().__init__(F(column))
        self.query = query

    def as_sql(self, compiler, connection, **extra):
        sql, params = super().as_sql(compiler, connection, query="%s", **extra)
        return sql, (*params, self.query)


def _matches(column, terms):
    """A condition: every term is a word of `column`, or the start of one when it is long enough."""
    vendor = connection.vendor
    if vendor == "sqlite":
        return _WordsMatch(column, terms)
    if vendor == "postgresql":
        return _TsMatch(column, " & ".join(f"{term}:*" if len(term) >= MIN_PREFIX_CHARS else term for term in terms))
    raise NotImplementedError(f"search has no matcher for the {vendor} database")


def _term_pattern(terms):
    """One regular expression per term, over lower-cased text: a word start, or a whole short word."""
    return [re.compile(r"(?<![^\W_])" + re.escape(term) + (r"" if len(term) >= MIN_PREFIX_CHARS else r"(?![^\W_])"))
            for term in terms]


_PATTERNS = {}


def words_match(text, pattern):
    """chat_words_match on SQLite: does `text` hold every term of `pattern` (space-separated, lower case)?"""
    if not text or not pattern:
        return False
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        if len(_PATTERNS) > 256:
            _PATTERNS.clear()
        compiled = _PATTERNS[pattern] = _term_pattern(pattern.split())
    text = text.lower()
    return all(regex.search(text) for regex in compiled)


def register_functions(sender, connection, **kwargs):
    """connection_created: give every SQLite connection the search's matcher."""
    if connection.vendor == "sqlite":
        connection.connection.create_function("chat_words_match", 2, words_match, deterministic=True)


def _fold(char):
    """A character without its accents, one for one (so positions in the folded text are the text's)."""
    base = unicodedata.normalize("NFD", char)[0]
    return base if len(base) == 1 else char


def snippet(text, terms, width=SNIPPET_CHARS, lead=SNIPPET_LEAD):
    """The part of `text` around the first match of a term, as [{text, match}] segments, where a
    match is a word that starts with a term (case and accents aside, as the SQLite index matches)."""
    text = " ".join(text.split())  # one line: newlines and runs of spaces would only waste the width
    folded = "".join(_fold(char) for char in text)
    folded_terms = sorted({"".join(_fold(c) for c in term) for term in terms}, key=len, reverse=True)
    # A word that starts with a term (or is a short term), highlighted whole.
    pattern = re.compile(r"(?<![^\W_])(?:" + "|".join(
        re.escape(term) + (r"[^\W_]*" if len(term) >= MIN_PREFIX_CHARS else r"(?![^\W_])") for term in folded_terms)
        + r")", re.IGNORECASE)
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
