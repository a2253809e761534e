# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install when needed.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test install clean bench bench-quick

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf demo_out
	$(VENV)/bin/meddiff demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q

# The evidence suite on ../shared/data (MEDDIFF_DATA=... for another copy): writes docs/RESULTS.md.
# bench-quick starts afresh (under 20 min on 2 cores); bench continues an interrupted run (under 3 h).
bench-quick: $(STAMP)
	rm -rf bench_out/quality-quick
	$(VENV)/bin/meddiff bench --suite quality --quick

bench: $(STAMP)
	$(VENV)/bin/meddiff bench --suite quality

clean:
	rm -rf demo_out .pytest_cache
