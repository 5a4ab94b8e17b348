# qexit: two commands on a fresh machine.
#   make report   the main flow on the embedded default (writes reports/)
#   make test     the test suite
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEB     := dataset-fashion-mnist iverilog
JOBS    ?= $(shell nproc)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup report test test-slow clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(DEB); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,synth,dist,clip]'
	touch $(STAMP)

report: setup
	$(BIN)/qexit report

test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal

test-slow: setup
	$(BIN)/python -m pytest -q -n $(JOBS) -m slow

clean:
	rm -rf $(VENV) sim_build .pytest_cache
