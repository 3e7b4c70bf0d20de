# Portico: `make run` serves the portal with demo data; `make test` runs the whole suite.
# Each installs what it needs: a virtualenv in .venv, and the system packages WeasyPrint
# (and, for the tests, Chromium) need when they are missing and apt-get can install them.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# The suite runs its test files on this many processes (pytest-xdist; "auto": one per CPU);
# each process has its own database and Redis database.
TEST_JOBS ?= auto
PYTEST := $(BIN)/pytest -n $(TEST_JOBS) --dist loadfile
# Fonts: DejaVu (Latin, Greek, Cyrillic), Noto (Arabic, Hebrew, Devanagari, Thai) and WenQuanYi
# Micro Hei (Chinese, Japanese, Korean: 1.6 MB, where fonts-noto-cjk is 56 MB), so an invoice
# prints any customer's name and address.
SYSTEM_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core \
	fonts-noto-core fonts-wqy-microhei
TEST_SYSTEM_PACKAGES := chromium poppler-utils openssl postgresql-client redis-server

.PHONY: run test test-sqlite test-postgresql system-deps test-system-deps clean

$(BIN)/portico: setup.cfg pyproject.toml $(wildcard core/translations/*/LC_MESSAGES/*.po)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	$(BIN)/pip install -qq -e .
	$(BIN)/pybabel -q compile -d core/translations
	touch $@

# The Stripe plugin is installed like any third-party plugin, with its own package.
$(VENV)/.test-deps: $(BIN)/portico plugins/stripe/setup.cfg
	$(BIN)/pip install -qq -e '.[test]' -e ./plugins/stripe
	touch $@

system-deps:
	@sh .ci/system-packages $(SYSTEM_PACKAGES)

test-system-deps:
	@sh .ci/system-packages $(SYSTEM_PACKAGES) $(TEST_SYSTEM_PACKAGES)

# The demo's links, the dashboard login and the API key are the last lines on the screen.
run: system-deps $(BIN)/portico
	@mkdir -p instance
	@PORTICO_ENV=development $(BIN)/portico migrate
	@PORTICO_ENV=development PORTICO_BASE_URL=http://127.0.0.1:$(PORT) $(BIN)/portico serve --demo --port $(PORT)

# The suite runs twice: on SQLite, then on PostgreSQL (PORTICO_TEST_POSTGRES_URL).
test: test-system-deps $(VENV)/.test-deps
	$(PYTEST)
	PORTICO_TEST_DATABASE=postgresql $(PYTEST)

clean:
	rm -rf $(VENV) instance test-output
