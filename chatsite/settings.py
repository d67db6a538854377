"""All configuration, read from the environment in this one place.

Every variable has a default that lets a fresh checkout run (`make run`). A malformed value
stops start-up with an error that names the variable.
"""
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from environs import Env, EnvError
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

BASE_DIR = Path(__file__).resolve().parent.parent

env = Env()
env.read_env(BASE_DIR / ".env", recurse=False)


def _read(kind, name, default, **kwargs):
    try:
        return getattr(env, kind)(name, default, **kwargs)
    except EnvError as exc:
        raise ImproperlyConfigured(f"Bad value for environment variable {name}: {exc}") from None


def _port(name, default):
    value = _read("int", name, default)
    if not 1 <= value <= 65535:
        raise ImproperlyConfigured(f"Bad value for environment variable {name}: {value} is not a TCP port")
    return value


def _positive(kind, name, default):
    value = _read(kind, name, default)
    if value <= 0:
        raise ImproperlyConfigured(f"Bad value for environment variable {name}: must be greater than 0")
    return value


def _choice(name, default, choices):
    value = _read("str", name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"Bad value for environment variable {name}: {value!r} is not one of {choices}")
    return value


def _local_secret_key(path):
    """Create the key file once (exclusively, so concurrent first starts agree), then read it."""
    import os
    import time

    from django.core.management.utils import get_random_secret_key

    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as key_file:
            key_file.write(get_random_secret_key())
    except FileExistsError:
        pass
    for _ in range(100):  # another process may be writing it this instant
        if key := path.read_text().strip():
            return key
        time.sleep(0.01)
    raise ImproperlyConfigured(f"{path} is empty; delete it or set SECRET_KEY")


# --- Django core -------------------------------------------------------------------------
# CHAT_PRODUCTION=true is the documented production mode (behind HTTPS): the secret key must
# come from the environment, cookies are secure, HSTS is on. `manage.py check --deploy` is clean.
PRODUCTION = _read("bool", "CHAT_PRODUCTION", False)
DEBUG = _read("bool", "DEBUG", False)
ALLOWED_HOSTS = _read("list", "ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
SECRET_KEY = _read("str", "SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set in the environment when CHAT_PRODUCTION is true")
    # A self-hosted install without configuration gets its own random key, kept across restarts.
    SECRET_KEY = _local_secret_key(BASE_DIR / ".secret_key")

SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = PRODUCTION
SECURE_SSL_REDIRECT = _read("bool", "SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = _read("int", "SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = PRODUCTION
if PRODUCTION:  # a TLS-terminating proxy in front says the request came over HTTPS
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "chat.session_expiry.SlidingSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "chat.signin_throttle.SignInThrottleMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]
# Content-Security-Policy (django-csp): scripts only from this site, never inline, so a reply
# that slipped past the sanitizer still could not run. Styles may be inline (the admin's are).
CONTENT_SECURITY_POLICY = {"DIRECTIVES": {
    "default-src": ["'self'"], "script-src": ["'self'"], "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:"], "connect-src": ["'self'"], "object-src": ["'none'"],
    "base-uri": ["'self'"], "form-action": ["'self'"], "frame-ancestors": ["'none'"],
}}

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": _read("dj_db_url", "DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
CHAT_DB_TIMEOUT = _positive("float", "CHAT_DB_TIMEOUT", 20.0)  # seconds a request waits for the database
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker processes write concurrently: take the write lock when a transaction begins
    # (a deferred one that reads first and then writes can fail at once), wait for it rather
    # than failing, and let readers go on while one process writes (WAL).
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "timeout": CHAT_DB_TIMEOUT,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    })
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A pool per process (psycopg_pool): daphne runs each request's database work on a thread of
    # its own and workers hop threads too, so per-thread persistent connections would pile up.
    # Connections are checked when taken (one dropped by a server restart is replaced, not used),
    # and a database that stays away fails a request after CHAT_DB_TIMEOUT, it does not hang it.
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # required with a pool
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # Django then has the pool check each connection it lends
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "connect_timeout": 5,
        "pool": {"min_size": 1, "max_size": _positive("int", "CHAT_DB_POOL_SIZE", 10),
                 "timeout": CHAT_DB_TIMEOUT},
    })
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_ENGINE = "django.contrib.sessions.backends.db"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = LOGOUT_REDIRECT_URL = "/"
# A session (a guest's identity, a sign-in) lasts CHAT_SESSION_DAYS after its last visit
# (chat.session_expiry renews it at most once a day), not a year after it began.
SESSION_COOKIE_AGE = 24 * 3600 * _positive("int", "CHAT_SESSION_DAYS", 30)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True  # serve from static/ without a collectstatic step

# --- Serving -----------------------------------------------------------------------------
CHAT_HOST = _read("str", "CHAT_HOST", "127.0.0.1")
CHAT_PORT = _port("CHAT_PORT", 8000)
REDIS_URL = _read("str", "REDIS_URL", "redis://127.0.0.1:6379/0")

# Pooled connections go stale when Redis restarts: retry a command on a fresh connection
# rather than failing the socket or the worker loop that issued it.
REDIS_OPTIONS = {
    "retry": Retry(ExponentialBackoff(cap=2, base=0.1), retries=5),
    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 reads with a 5 s socket timeout by default, the same as channels_redis's
        # 5 s blocking pop: give the pop room so an idle receive is not an error.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15, **REDIS_OPTIONS}],
                   "capacity": 1000, "expiry": 60},
    }
}

# --- Model and inference -----------------------------------------------------------------
CHAT_MODEL = _read("str", "CHAT_MODEL", "default")  # "default", a Hugging Face id, or a folder
# An OpenAI-compatible server (vLLM, TGI, llama.cpp, transformers serve) to stream replies from
# instead of loading a model: its base URL (…/v1), an API key if it wants one, and the model name
# ("" takes the first it lists).
CHAT_UPSTREAM_URL = _read("str", "CHAT_UPSTREAM_URL", "")
CHAT_UPSTREAM_API_KEY = _read("str", "CHAT_UPSTREAM_API_KEY", "")
CHAT_UPSTREAM_MODEL = _read("str", "CHAT_UPSTREAM_MODEL", "")
CHAT_UPSTREAM_MAX_IN_FLIGHT = _positive("int", "CHAT_UPSTREAM_MAX_IN_FLIGHT", 64)  # replies in flight per upstream worker
CHAT_DEVICE = _read("str", "CHAT_DEVICE", "auto")  # auto, cpu, cuda:N
CHAT_DTYPE = _choice("CHAT_DTYPE", "auto", ["auto", "float32", "bfloat16", "float16"])
CHAT_MODEL_CACHE = _read("path", "CHAT_MODEL_CACHE", Path.home() / ".cache" / "chatsite" / "models")
CHAT_CONTEXT_WINDOW = _read("int", "CHAT_CONTEXT_WINDOW", 8192)  # 0: the model's own maximum
CHAT_MAX_NEW_TOKENS = _positive("int", "CHAT_MAX_NEW_TOKENS", 512)  # default per reply
CHAT_MAX_NEW_TOKENS_LIMIT = _positive("int", "CHAT_MAX_NEW_TOKENS_LIMIT", 4096)  # most a client may ask
CHAT_DEFAULT_SYSTEM_PROMPT = _read("str", "CHAT_DEFAULT_SYSTEM_PROMPT", "You are a helpful assistant.")
# auto: weight-only integers on a CPU (inference.quantization.CPU_DEFAULT, the fastest setting that passed
# the quality gate, docs/quality-gate.json), none on a GPU
CHAT_QUANTIZE = _choice("CHAT_QUANTIZE", "auto", ["auto", "none", "int8", "int4"])
CHAT_MAX_BATCH_SIZE = _positive("int", "CHAT_MAX_BATCH_SIZE", 16)  # replies decoded together per worker
CHAT_MAX_CACHE_TOKENS = _positive("int", "CHAT_MAX_CACHE_TOKENS", 65536)  # KV-cache budget per worker
CHAT_PREFILL_CHUNK_TOKENS = _positive("int", "CHAT_PREFILL_CHUNK_TOKENS", 256)  # long prompts read in chunks

# --- Chat behaviour, limits and timeouts --------------------------------------------------
CHAT_ALLOW_GUESTS = _read("bool", "CHAT_ALLOW_GUESTS", True)
CHAT_ADMIN_READ_ONLY = _read("bool", "CHAT_ADMIN_READ_ONLY", True)  # reviewers cannot edit history
CHAT_MAX_MESSAGE_CHARS = _positive("int", "CHAT_MAX_MESSAGE_CHARS", 32_000)
CHAT_MAX_FRAME_BYTES = _positive("int", "CHAT_MAX_FRAME_BYTES", 256 * 1024)  # larger frames get an error
# Files attached to one message (text only), all together, and how many; sent inside the send frame,
# so the default stays well under CHAT_MAX_FRAME_BYTES with a full-length message beside it.
CHAT_MAX_ATTACHMENT_CHARS = _positive("int", "CHAT_MAX_ATTACHMENT_CHARS", 100_000)
CHAT_MAX_ATTACHMENTS = _positive("int", "CHAT_MAX_ATTACHMENTS", 10)
CHAT_MAX_TURNS_IN_FLIGHT = _positive("int", "CHAT_MAX_TURNS_IN_FLIGHT", 1)  # replies generating per user
CHAT_MESSAGES_PER_MINUTE = _positive("int", "CHAT_MESSAGES_PER_MINUTE", 20)  # send/edit/regenerate per user
CHAT_MAX_CONVERSATIONS = _positive("int", "CHAT_MAX_CONVERSATIONS", 1000)  # per user, API calls' aside
# Per API key (each key may set its own in the admin): programs send in parallel and by the thousand.
CHAT_API_KEY_MAX_IN_FLIGHT = _positive("int", "CHAT_API_KEY_MAX_IN_FLIGHT", 16)  # calls generating at once
CHAT_API_KEY_REQUESTS_PER_MINUTE = _positive("int", "CHAT_API_KEY_REQUESTS_PER_MINUTE", 600)
CHAT_API_KEY_TOKENS_PER_MINUTE = _positive("int", "CHAT_API_KEY_TOKENS_PER_MINUTE", 1_000_000)  # prompt + completion
CHAT_API_RETENTION_DAYS = _positive("int", "CHAT_API_RETENTION_DAYS", 30)  # API calls' conversations, after their last turn
CHAT_SIGNIN_ATTEMPTS = _positive("int", "CHAT_SIGNIN_ATTEMPTS", 10)  # failed sign-ins per (address, username) per 15 min
CHAT_SIGNIN_ATTEMPTS_PER_USER = _positive("int", "CHAT_SIGNIN_ATTEMPTS_PER_USER", 30)  # per username, from anywhere
CHAT_SIGNIN_ATTEMPTS_PER_ADDRESS = _positive("int", "CHAT_SIGNIN_ATTEMPTS_PER_ADDRESS", 100)  # per address, any username
CHAT_PROXY_HEADERS = _read("bool", "CHAT_PROXY_HEADERS", False)  # trust X-Forwarded-For (behind a proxy only)
CHAT_PROXY_COUNT = _positive("int", "CHAT_PROXY_COUNT", 1)  # our proxies in front: the client is that many from the right
CHAT_MAX_QUEUED_TURNS = _positive("int", "CHAT_MAX_QUEUED_TURNS", 256)  # waiting in the shared queue: `overloaded`
CHAT_GUESTS_PER_ADDRESS = _positive("int", "CHAT_GUESTS_PER_ADDRESS", 20)  # new guest identities per address per hour
CHAT_GUEST_TURNS_PER_ADDRESS = _positive("int", "CHAT_GUEST_TURNS_PER_ADDRESS", 60)  # guest turns per address per minute
# Doors besides the turn (docs/protocol.md, README "Operating it"): imports, searches, frames, sockets.
CHAT_IMPORTS_PER_HOUR = _positive("int", "CHAT_IMPORTS_PER_HOUR", 10)  # per user; guests: per address
CHAT_SEARCHES_PER_MINUTE = _positive("int", "CHAT_SEARCHES_PER_MINUTE", 60)  # per user
CHAT_SOCKET_FRAMES_PER_SECOND = _positive("float", "CHAT_SOCKET_FRAMES_PER_SECOND", 10.0)  # per socket, sustained
CHAT_SOCKET_FRAME_BURST = _positive("int", "CHAT_SOCKET_FRAME_BURST", 40)  # frames a socket may send at once
CHAT_SOCKET_FLOOD_FRAMES = _positive("int", "CHAT_SOCKET_FLOOD_FRAMES", 100)  # refused before the bucket refills: closed (4429)
CHAT_MAX_SOCKETS_PER_USER = _positive("int", "CHAT_MAX_SOCKETS_PER_USER", 20)  # open at once (`too_many_sockets`)
CHAT_HISTORY_PAGE_MESSAGES = _positive("int", "CHAT_HISTORY_PAGE_MESSAGES", 200)  # most messages in one `history`
CHAT_HISTORY_MAX_MESSAGES = _positive("int", "CHAT_HISTORY_MAX_MESSAGES", 100)  # kept hot in Redis
CHAT_HISTORY_TTL = _positive("int", "CHAT_HISTORY_TTL", 24 * 3600)  # seconds an idle conversation stays in Redis
CHAT_REQUEST_TIMEOUT = _positive("float", "CHAT_REQUEST_TIMEOUT", 30.0)  # no worker picked the turn up
CHAT_STALL_TIMEOUT = _positive("float", "CHAT_STALL_TIMEOUT", 60.0)  # no token from a started reply
CHAT_FRAME_TIMEOUT = _positive("float", "CHAT_FRAME_TIMEOUT", 30.0)  # longest a frame may take to answer
CHAT_TOKEN_FLUSH_INTERVAL = _read("float", "CHAT_TOKEN_FLUSH_INTERVAL", 0.03)  # coalesce token frames
CHAT_WORKER_HEARTBEAT = _positive("float", "CHAT_WORKER_HEARTBEAT", 2.0)

LOG_FORMAT = _choice("LOG_FORMAT", "plain", ["plain", "json"])  # json: one object per line, with extras
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"turn": {"()": "chat.log_context.TurnDefaults"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s turn=%(turn)s"},
        "json": {"()": "pythonjsonlogger.json.JsonFormatter",
                 "format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s %(turn)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["turn"]}},
    "root": {"handlers": ["console"], "level": _read("str", "LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}
