# `make run` and `make test` each do all the set-up they need on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: run test test-repeat setup redis model db browser clean

# supervisord runs the Procfile's processes and restarts one that dies (supervisord.conf).
run: setup redis
	supervisord -c supervisord.conf

# The page's JavaScript tests use Node's own runner (no npm install, no build step), then pytest.
test: setup redis browser
	@command -v node >/dev/null || { echo "Install Node.js 20 or later for the page's JavaScript tests (apt-get install nodejs)"; exit 1; }
	node --test static/chat/tests/
	python -m pytest $(PYTEST_ARGS)

# Flake hunting: the whole-stack and browser tests N times over (rounds of the whole set, one after
# another); pytest's summary names every test that failed, with its round ([round-N]).
N ?= 5
test-repeat: setup redis browser
	python -m pytest -m "slow or browser" --count $(N) --repeat-scope session $(PYTEST_ARGS)

setup: $(VENV)/.installed model db

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

model: $(VENV)/.installed
	python manage.py prepare_model

db: $(VENV)/.installed
	python manage.py migrate --noinput -v 0
	python manage.py collectstatic --noinput -v 0

redis: $(VENV)/.installed
	python scripts/ensure_redis.py

# The browser tests drive Debian's chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| { echo "Install Debian's chromium for the browser tests (apt-get install chromium)"; exit 1; }

clean:
	rm -rf $(VENV) staticfiles
