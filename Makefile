# wsgi-supervisor: `make run` serves the demo, `make test` runs the whole suite.
# Both set up what they need first (Debian packages when missing, .venv/).

VENV     := .venv
PYTHON   ?= python3
RUNTIME  := $(CURDIR)/run
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# systemd-python builds against libsystemd
RUN_DEBS  := libsystemd-dev pkg-config
# what the tests run for real: systemd in nspawn, Apache, nginx, promtool, wrk; the fleet
# test's hosts run sshd, and HAProxy balances over them; the control-plane test's database and message broker;
# zsh, whose completion is run for real as bash's is
TEST_DEBS := $(RUN_DEBS) systemd-container apache2 nginx prometheus wrk curl passwd haproxy openssh-server openssh-client tmux \
             mariadb-server rabbitmq-server zsh
# the benchmarks' own: `bench/run.py memory` runs a control plane on a private MariaDB
BENCH_DEBS := mariadb-server

.PHONY: setup setup-test run test test-fleet lint docs man bench clean

define ensure_debs
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

$(VENV)/.installed: pyproject.toml
	$(call ensure_debs,$(RUN_DEBS))
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,docs]'
	touch $@

setup: $(VENV)/.installed

setup-test: setup
	$(call ensure_debs,$(TEST_DEBS))

run: setup
	$(VENV)/bin/wsgi-supervisor --conf-dir conf.d --runtime-dir $(RUNTIME)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# the operator's documentation: a warning is an error; the HTML lands in build/docs/
docs: setup
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs build/docs

# the man pages in man/, written again from the argument parsers (a test checks them)
man: setup
	$(VENV)/bin/python docs/_ext/manpages.py man

test: setup-test lint docs
	$(VENV)/bin/pytest

# the fleet test alone (it is part of `make test` too)
test-fleet: setup-test
	$(VENV)/bin/pytest -m fleet

bench: setup-test
	$(call ensure_debs,$(BENCH_DEBS))
	$(VENV)/bin/python bench/run.py

clean:
	rm -rf $(VENV) $(RUNTIME) .pytest_cache .ruff_cache build/docs
