"""Share links, and the full-text index that chat.search queries (one per database vendor).

SQLite: two external-content FTS5 tables (message text, conversation titles) kept current by
triggers. PostgreSQL: GIN indexes over to_tsvector('simple', ...) of the same columns, which the
planner uses for the matching `@@` queries in chat.search.
"""

import django.db.models.deletion
from django.db import migrations, models


SQLITE_CREATE = [
    "CREATE VIRTUAL TABLE chat_message_fts USING fts5("
    " content, content='chat_message', content_rowid='id', tokenize='unicode61 remove_diacritics 2', prefix='2 3')",
    "CREATE TRIGGER chat_message_fts_insert AFTER INSERT ON chat_message BEGIN"
    " INSERT INTO chat_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER chat_message_fts_delete AFTER DELETE ON chat_message BEGIN"
    " INSERT INTO chat_message_fts(chat_message_fts, rowid, content) VALUES ('delete', old.id, old.content); END",
    "CREATE TRIGGER chat_message_fts_update AFTER UPDATE OF content ON chat_message BEGIN"
    " INSERT INTO chat_message_fts(chat_message_fts, rowid, content) VALUES ('delete', old.id, old.content);"
    " INSERT INTO chat_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "INSERT INTO chat_message_fts(chat_message_fts) VALUES ('rebuild')",
    "CREATE VIRTUAL TABLE chat_conversation_fts USING fts5("
    " title, content='chat_conversation', content_rowid='id', tokenize='unicode61 remove_diacritics 2', prefix='2 3')",
    "CREATE TRIGGER chat_conversation_fts_insert AFTER INSERT ON chat_conversation BEGIN"
    " INSERT INTO chat_conversation_fts(rowid, title) VALUES (new.id, new.title); END",
    "CREATE TRIGGER chat_conversation_fts_delete AFTER DELETE ON chat_conversation BEGIN"
    " INSERT INTO chat_conversation_fts(chat_conversation_fts, rowid, title) VALUES ('delete', old.id, old.title); END",
    "CREATE TRIGGER chat_conversation_fts_update AFTER UPDATE OF title ON chat_conversation BEGIN"
    " INSERT INTO chat_conversation_fts(chat_conversation_fts, rowid, title) VALUES ('delete', old.id, old.title);"
    " INSERT INTO chat_conversation_fts(rowid, title) VALUES (new.id, new.title); END",
    "INSERT INTO chat_conversation_fts(chat_conversation_fts) VALUES ('rebuild')",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS chat_message_fts_insert",
    "DROP TRIGGER IF EXISTS chat_message_fts_delete",
    "DROP TRIGGER IF EXISTS chat_message_fts_update",
    "DROP TABLE IF EXISTS chat_message_fts",
    "DROP TRIGGER IF EXISTS chat_conversation_fts_insert",
    "DROP TRIGGER IF EXISTS chat_conversation_fts_delete",
    "DROP TRIGGER IF EXISTS chat_conversation_fts_update",
    "DROP TABLE IF EXISTS chat_conversation_fts",
]
POSTGRES_CREATE = [
    "CREATE INDEX chat_message_content_fts ON chat_message USING GIN (to_tsvector('simple', content))",
    "CREATE INDEX chat_conversation_title_fts ON chat_conversation USING GIN (to_tsvector('simple', title))",
]
POSTGRES_DROP = [
    "DROP INDEX IF EXISTS chat_message_content_fts",
    "DROP INDEX IF EXISTS chat_conversation_title_fts",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)
    return run


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0004_longer_device'),
    ]

    operations = [
        migrations.CreateModel(
            name='ShareLink',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('token', models.CharField(editable=False, max_length=64, unique=True)),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
                ('conversation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                                   related_name='share_links', to='chat.conversation')),
            ],
        ),
        migrations.RunPython(
            _run({"sqlite": SQLITE_CREATE, "postgresql": POSTGRES_CREATE}),
            _run({"sqlite": SQLITE_DROP, "postgresql": POSTGRES_DROP}),
        ),
    ]
