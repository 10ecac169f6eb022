# The two commands a newcomer runs:  make demo   and   make test
VENV := .venv
PY := $(VENV)/bin/python
DEMO_CT := DrasCLRSlicer/drasclr/data/demo_ct.nii.gz

.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/drasclr analyze $(DEMO_CT) -o demo-out

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: setup
	$(PY) -m drasclr bench

clean:
	rm -rf demo-out .pytest_cache .ruff_cache
