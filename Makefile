# The README's two commands: `make run` (the product on embedded defaults) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run worker test lint system-deps services messages clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py bootstrap_model
	@echo "MedPortal on http://$(HOST):$(PORT)/ with two Celery workers (Ctrl-C stops all three)."
	# Solo pools: a model loads once in the process that runs it (STACK.md). Training has its own worker, so doctors'
	# analyses go on while an ML admin's run trains.
	$(VENV)/bin/celery -A medportal worker -Q inference,evaluation,celery --pool=solo -n analyses@%h --loglevel=INFO & analyses=$$!; \
	$(VENV)/bin/celery -A medportal worker -Q training --pool=solo -n training@%h --loglevel=INFO & training=$$!; \
	trap 'kill $$analyses $$training 2>/dev/null; wait $$analyses $$training 2>/dev/null' EXIT INT TERM; \
	$(PY) manage.py runserver $(HOST):$(PORT)

# The test suite runs against this machine's PostgreSQL and Redis unless told otherwise.
test: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/medportal
test: export CELERY_BROKER_URL ?= redis://127.0.0.1:6379/15
test: install system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Debian's Chromium and CJK fonts for the browser tests (Playwright never downloads a browser here).
system-deps:
	@if [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then \
		echo "Installing chromium and fonts-noto-cjk (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; \
	fi

# Start PostgreSQL and Redis if they are not running (CI and fresh machines).
services:
	@pg_isready -h 127.0.0.1 -p 5432 -q || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in $$(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0; sleep 1; done; \
		echo "PostgreSQL or Redis did not start" >&2; exit 1

# Regenerate the translation catalogue after changing user-visible strings.
messages: install
	$(PY) manage.py makemessages -l zh_Hans --ignore=.venv --ignore=var
	$(PY) manage.py compilemessages -l zh_Hans

clean:
	rm -rf $(VENV) var .pytest_cache
