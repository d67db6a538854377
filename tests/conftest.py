import asyncio

import pytest
import redis
from django.conf import settings

from bench.stack import Stack, postgres_server

# The whole-stack, scale-out and database fault tests run on each: SQLite (the embedded default)
# and PostgreSQL (where one answers; see postgres_server_url).
STACK_DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory):
    """SQLite tests use a file, as the service does: an in-memory database shares one cache between
    threads and answers concurrent writers 'table is locked' at once, where a file waits its turn."""
    from django.db import connections

    database = connections["default"].settings_dict
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database["TEST"]["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture(scope="session")
def default_model_dir():
    """The packaged default model, converted once into the cache (as `make setup` does)."""
    from inference.packaged_model import ensure_converted

    return ensure_converted(settings.CHAT_MODEL_CACHE)


@pytest.fixture(scope="session")
def tiny_model_dir(default_model_dir, tmp_path_factory):
    """A tiny qwen2 model with random weights and the default model's real tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _devices():
    import torch

    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())][:1]


@pytest.fixture(scope="session", params=_devices())
def tiny_engine(tiny_model_dir, request):
    """The tiny model in fp32 (unquantized) on each device there is (the CPU; and the first GPU where one is)."""
    from inference import EngineConfig, load_engine

    return load_engine(EngineConfig(model=str(tiny_model_dir), device=request.param, dtype="float32",
                                    quantize="none"))


@pytest.fixture(scope="session")
def real_engine(default_model_dir, tmp_path_factory):
    from inference import EngineConfig, load_engine

    return load_engine(EngineConfig(cache_dir=settings.CHAT_MODEL_CACHE, device="cpu", dtype="float32",
                                    quantize="none"))


@pytest.fixture
def engine(tiny_engine):
    """The tiny model behind a recording, pace-able engine (tests.chat_support.RecordingEngine)."""
    from tests.chat_support import RecordingEngine

    return RecordingEngine(tiny_engine)


@pytest.fixture
async def worker(engine, clean_redis):
    """An inference worker running in the test's event loop, over the real Redis."""
    from tests.chat_support import start_worker

    worker, stop, task = await start_worker(engine)
    yield worker
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.fixture
def clean_redis():
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture(scope="session")
def postgres_server_url():
    server = postgres_server()
    if server is None:
        pytest.skip("no PostgreSQL answers at CHAT_TEST_POSTGRES (default postgres://postgres@127.0.0.1:5432): "
                    "the PostgreSQL variant of this test is skipped")
    return server


def stack_database(request):
    """For a test parametrized over STACK_DATABASES: "sqlite", or the PostgreSQL server's URL."""
    return "sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres_server_url")


@pytest.fixture(params=STACK_DATABASES)
def database(request):
    return stack_database(request)


LIVE_STACK_SETTINGS = {  # one reply at a time, so that a second user really waits (the browser tests show the queue)
    "CHAT_STALL_TIMEOUT": 20, "CHAT_REQUEST_TIMEOUT": 20, "CHAT_MAX_BATCH_SIZE": 1}


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory, default_model_dir):
    """The whole service started from the Procfile, as `make run` starts it, on a free port."""
    stack = Stack(tmp_path_factory.mktemp("stack"), **LIVE_STACK_SETTINGS)
    try:
        yield stack.start_all()
    finally:
        stack.stop()


@pytest.fixture(scope="module", params=STACK_DATABASES)
def whole_stack(request, tmp_path_factory, default_model_dir):
    """The live stack on SQLite (the session's), and the same on a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield request.getfixturevalue("live_stack")
        return
    # its own Redis database too: the session's live stack may be running, and its worker would
    # take this stack's turns from a shared queue (and not find their conversations)
    stack = Stack(tmp_path_factory.mktemp("pg-stack"), redis_db=8, database=stack_database(request),
                  **LIVE_STACK_SETTINGS)
    try:
        yield stack.start_all()
    finally:
        stack.stop()


def pytest_collection_modifyitems(config, items):
    """Run the browser tests last: Playwright's sync API keeps an event loop running in the main
    thread, which the async tests (and asyncio.run) cannot share."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
