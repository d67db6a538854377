"""Reviewers export conversations: for fine-tuning (the active branch only), and every message with
its provenance (CSV, JSONL)."""
import json

import pytest

from chat import turns
from chat.models import Message, Owner
from tests.admin_support import conversation_with, reply, staff, user_says

pytestmark = pytest.mark.django_db

ALICE = Owner(guest_key="alice-guest")


def finish(message, content):
    Message.objects.filter(pk=message.pk).update(content=content, finish_reason=Message.FinishReason.STOP)


def export(action, *conversations):
    _, client = staff("reviewer", superuser=True)
    response = client.post("/admin/chat/conversation/", {
        "action": action, "_selected_action": [c.pk for c in conversations]})
    assert response.status_code == 200 and response.streaming  # sent as it is read, never whole in memory
    return [json.loads(line) for line in body_of(response).splitlines()]


def body_of(response):
    return b"".join(response.streaming_content).decode()


def test_the_fine_tuning_export_of_a_regenerated_reply_holds_only_the_active_branch():
    conversation, _, first = turns.start_turn(ALICE, None, "Name a colour.", {})
    finish(first, "Red.")
    _, _, second, replaced = turns.start_regeneration(ALICE, conversation.pk, {})
    assert replaced == first.pk
    finish(second, "Blue.")
    _, _, third = turns.start_turn(ALICE, conversation.pk, "Another?", {})
    finish(third, "Green.")

    assert export("export_fine_tuning", conversation) == [{"messages": [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "Green."},
    ]}]


def test_the_fine_tuning_export_leaves_out_what_was_edited_away_and_what_did_not_end():
    conversation, asked, first = turns.start_turn(ALICE, None, "What is 2+2?", {})
    finish(first, "5")
    _, _, corrected = turns.start_edit(ALICE, conversation.pk, asked.pk, "What is 2+3?", {})
    finish(corrected, "5")
    turns.start_turn(ALICE, conversation.pk, "And 3+3?", {})  # its reply is still generating

    assert export("export_fine_tuning", conversation) == [{"messages": [
        {"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "5"}]}]


def test_the_fine_tuning_export_skips_conversations_without_a_finished_reply():
    empty = conversation_with(user_says("Hello?"), reply("", finish_reason="error", error_detail="no worker"))
    answered = conversation_with(user_says("Hi"), reply("Hello!"))
    assert export("export_fine_tuning", empty, answered) == [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}]


def test_the_message_exports_carry_each_replys_provenance_and_the_review():
    conversation = conversation_with(
        user_says("Hi"),
        reply("Hello!", model_name="qwen", worker="host-1-42-abc", device="cpu", precision="bfloat16"),
        model_name="qwen", review_note="fine")
    rows = export("export_jsonl", conversation)
    assert [(r["role"], r["model_name"], r["worker"], r["device"], r["precision"]) for r in rows] == [
        ("user", "", "", "", ""), ("assistant", "qwen", "host-1-42-abc", "cpu", "bfloat16")]
    assert {r["conversation_model"] for r in rows} == {"qwen"} and {r["review_note"] for r in rows} == {"fine"}

    _, client = staff("csv-reader", superuser=True)
    csv = body_of(client.post("/admin/chat/conversation/", {"action": "export_csv",
                                                            "_selected_action": [conversation.pk]}))
    header = csv.splitlines()[0].split(",")
    assert {"worker", "device", "precision", "model_name", "conversation_model"} <= set(header)
    assert "host-1-42-abc" in csv
