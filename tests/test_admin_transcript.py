"""A conversation's admin page shows its transcript as the chat does, with each reply's provenance."""
from html.parser import HTMLParser

import pytest

from tests.admin_support import conversation_with, reply, staff, transcript_html, user_says

pytestmark = pytest.mark.django_db

ANSWER = (
    "Here is a table:\n\n| name | age |\n|------|----:|\n| Ada | 36 |\n\n"
    "And code:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\n"
    "Careful: <script>window.__pwned = 1</script> <img src=x onerror=alert(1)>"
)


def page_of(conversation, client=None):
    client = client or staff("reviewer", superuser=True)[1]
    response = client.get(f"/admin/chat/conversation/{conversation.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_a_finished_reply_is_rendered_as_markdown_with_its_provenance_and_timings():
    conversation = conversation_with(
        user_says("Show me <b>a table</b>"),
        reply(ANSWER, model_name="qwen2.5-0.5b-instruct", worker="gpu-host-1234-ab12cd", device="cuda:0",
              precision="bfloat16", prompt_tokens=31, completion_tokens=25, time_to_first_token_ms=612.4,
              generation_ms=4803.22, params={"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 24,
                                             "seed": None, "system": "Be brief."},
              rating=-1, feedback="too terse"),
        model_name="qwen2.5-0.5b-instruct",
    )
    transcript = transcript_html(page_of(conversation))
    assert "<table>" in transcript and "<th>name</th>" in transcript and '<td style="text-align:right">36</td>' in transcript
    assert "<pre><code>def add(a, b):\n    return a + b\n</code></pre>" in transcript
    # What the model printed as HTML is text: escaped in the body and in the source view
    assert "<script>" not in transcript and "<img" not in transcript
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in transcript
    # The user's message is their text, as typed
    assert '<div class="msg-body plain">Show me &lt;b&gt;a table&lt;/b&gt;</div>' in transcript
    for fact in ["qwen2.5-0.5b-instruct", "gpu-host-1234-ab12cd", "cuda:0 · bfloat16", "<dd>Stop</dd>",
                 "31 prompt → 25 generated", "<dd>0.61 s</dd>", "<dd>5.7 tok/s</dd>", "<dd>4.80 s</dd>",
                 "temperature 0.7 · top_p 0.95 · max_new_tokens 24", "Be brief.", "👎 bad", "too terse"]:
        assert fact in transcript, fact
    assert "4803.22" not in transcript and "612.4" not in transcript


def test_the_finish_reason_is_shown_on_replies_only():
    conversation = conversation_with(user_says("Hi"), reply("Hello!"), user_says("And now?"),
                                     reply("", finish_reason=""))
    transcript = transcript_html(page_of(conversation))
    user_blocks = [block for block in transcript.split("<article")[1:] if 'data-role="user"' in block]
    assert len(user_blocks) == 2
    assert not any("data-finish-reason" in block or "Finish" in block for block in user_blocks)
    assert transcript.count("generating") == 2  # the last reply: still generating, in its state and its facts
    assert 'data-finish-reason="stop"' in transcript


def test_a_finished_conversation_says_generating_nowhere():
    conversation = conversation_with(user_says("Hi"), reply("Hello!", finish_reason="cancelled"))
    assert "generating" not in page_of(conversation).lower()


def test_superseded_messages_are_collapsed_where_they_branched():
    conversation = conversation_with(
        user_says("Tell me a joke"),
        reply("first joke", superseded=True),
        reply("second joke", superseded=True),
        reply("third joke"),
        user_says("Another one", superseded=True),
        reply("edited-away joke", superseded=True),
        user_says("Another one, about cats"),
        reply("cat joke"),
    )
    transcript = transcript_html(page_of(conversation))
    assert messages_and_branches(transcript) == [
        ("Tell me a joke", None),
        ("first joke", "Regenerated here: 2 earlier replies"),
        ("second joke", "Regenerated here: 2 earlier replies"),
        ("third joke", None),
        ("Another one", "Edited away here: 2 earlier messages"),
        ("edited-away joke", "Edited away here: 2 earlier messages"),
        ("Another one, about cats", None),
        ("cat joke", None),
    ]
    assert "<details class=\"branch\" open" not in transcript  # collapsed until opened


def messages_and_branches(transcript):
    """[(a message's text, the summary of the collapsed branch it is in, or None)] in page order."""
    class Reader(HTMLParser):
        def __init__(self):
            super().__init__()
            self.details, self.found, self.reading = [], [], None  # details: [summary, or None if not a branch]

        def handle_starttag(self, tag, attrs):
            classes = (dict(attrs).get("class") or "").split()
            if tag == "details":
                self.details.append("" if "branch" in classes else None)
            elif tag == "summary" and self.details[-1] == "":
                self.reading = "summary"
            elif tag == "div" and "msg-body" in classes:
                self.reading = "body"
                branch = next((summary for summary in reversed(self.details) if summary is not None), None)
                self.found.append(["", branch])

        def handle_endtag(self, tag):
            if tag == "details":
                self.details.pop()
            if tag in ("div", "summary"):
                self.reading = None

        def handle_data(self, data):
            if self.reading == "summary":
                self.details[-1] += data
            elif self.reading == "body":
                self.found[-1][0] += data

    reader = Reader()
    reader.feed(transcript)
    return [(text.strip(), branch) for text, branch in reader.found]


def test_a_reviewer_with_view_rights_only_sees_the_transcript_but_no_review_form():
    conversation = conversation_with(user_says("Hi"), reply("**Hello**"))
    _, client = staff("viewer", "view_conversation", "view_message")
    page = page_of(conversation, client)
    assert "<strong>Hello</strong>" in transcript_html(page)
    assert 'id="review-form"' not in page and "Not reviewed yet." in page
