# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv/ if missing and installs what it needs first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medcf-installed
DEMO_DIR := build/demo

.PHONY: demo test install system-deps bench bench-reports clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

demo: install
	test -d $(DEMO_DIR)/sample-study || $(PY) -m medcf sample-study --out $(DEMO_DIR)/sample-study
	rm -f $(DEMO_DIR)/sample-study.png
	$(PY) -m medcf inspect $(DEMO_DIR)/sample-study --png $(DEMO_DIR)/sample-study.png

test: install system-deps
	$(PY) -m pytest -n 2 -q tests

bench: install
	$(PY) benchmarks/bench_io.py

bench-reports: install
	$(PY) benchmarks/bench_reports.py

clean:
	rm -rf build .pytest_cache
