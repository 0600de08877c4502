# Headroom: `make run` to try it, `make test` to check it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# Ports and API processes come from the environment (HEADROOM_DASHBOARD_PORT, HEADROOM_API_PORT,
# HEADROOM_API_HOST, HEADROOM_API_WORKERS);
# everything else, the database included, from the settings (environment or headroom.toml).

.PHONY: run test lint worker dashboard api install install-dev browser clean bench

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Debian's Chromium for the one real-browser test (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: the browser test will be skipped"; \
	  else echo "no apt-get: the browser test will be skipped"; fi; }

run: install
	@bash scripts/run_all.sh

worker: install
	$(PY) worker.py

dashboard: install
	$(PY) -m streamlit run streamlit_app.py --server.port $${HEADROOM_DASHBOARD_PORT:-8501}

api: install
	$(PY) -m forecasting api --workers $${HEADROOM_API_WORKERS:-2}

# Lint, format and type checks (configured in pyproject.toml); `make test` runs them first.
lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install-dev browser lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis artifacts
