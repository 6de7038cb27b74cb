# Set-up on a fresh machine: both targets create .venv when missing and install the package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean postgres chromium example

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check vlens_async tests benchmarks examples
	$(BIN)/mypy --strict vlens_async
	$(BIN)/mypy --strict examples

# The queue's tests need a real PostgreSQL: the session starts a throwaway cluster from initdb and
# pg_ctl (tests/queue/pgcluster.py). Installed here from Debian's packages when missing (as root,
# as CI runs), without creating or starting Debian's own cluster.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		mkdir -p /etc/postgresql-common/createcluster.d && \
		echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/vlens-no-main.conf && \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	else \
		echo "initdb/pg_ctl not found: install PostgreSQL (Debian: apt-get install postgresql)" >&2; \
		exit 1; \
	fi

# The example's page test drives Debian's Chromium (never a browser Playwright downloads),
# installed here when missing, as root, as CI runs.
chromium:
	@if [ -x /usr/bin/chromium ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else \
		echo "/usr/bin/chromium not found: install Chromium (Debian: apt-get install chromium)" >&2; \
		exit 1; \
	fi

test: lint postgres chromium
	$(BIN)/python -m pytest -q

# The reference FastAPI integration (examples/fastapi_kyc) and an embedded emulator, on
# http://127.0.0.1:8000 until Ctrl-C.
example: $(STAMP)
	$(BIN)/python -m examples.fastapi_kyc

demo: $(STAMP)
	$(BIN)/vlens demo

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_client.py
	$(BIN)/python benchmarks/bench_images.py
	$(BIN)/python benchmarks/bench_emulator.py
	$(BIN)/python benchmarks/bench_flow.py
	$(BIN)/python benchmarks/bench_bulk.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
