"""Each reply records where it was made (model, worker, device, precision); its conversation, the model."""
import pytest
from asgiref.sync import sync_to_async

from chat.models import Conversation, Message
from tests.chat_support import connect, new_guest, send_turn
from tests.engine_support import fail_sampling

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_finished_reply_records_its_worker_device_and_precision_and_its_conversation_the_model(worker):
    socket = await connect(await new_guest())
    frames = await send_turn(socket, "Hello there", max_new_tokens=4)
    await socket.disconnect()
    reply = await sync_to_async(Message.objects.get)(pk=frames[-1]["message"])
    conversation = await sync_to_async(Conversation.objects.get)(pk=frames[-1]["conversation"])
    assert (reply.model_name, reply.worker) == ("tiny-test-model", worker.id)
    assert (reply.device, reply.precision) == (str(worker.engine.device), "float32")
    assert conversation.model_name == "tiny-test-model"


async def test_a_reply_that_failed_mid_stream_records_where_it_failed(worker, monkeypatch):
    fail_sampling(monkeypatch, seed=4242, after=2, message="row failed")
    socket = await connect(await new_guest())
    frames = await send_turn(socket, "Hello there", max_new_tokens=8, seed=4242)
    await socket.disconnect()
    reply = await sync_to_async(Message.objects.get)(pk=frames[-1]["message"])
    assert reply.finish_reason == "error" and reply.content
    assert (reply.model_name, reply.worker, reply.precision) == ("tiny-test-model", worker.id, "float32")


def test_provenance_fits_its_columns_even_for_an_upstream_with_a_long_url():
    class Upstream:
        name = "m" * 300
        device = "https://inference.example.internal:8443/" + "v" * 300
        dtype = "upstream"

    values = Message.provenance("worker-1", Upstream())
    assert values["device"].startswith("https://inference.example.internal:8443/") and len(values["device"]) == 200
    assert len(values["model_name"]) == 200 and values["precision"] == "upstream" and values["worker"] == "worker-1"
