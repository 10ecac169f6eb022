# The two commands a newcomer runs:  make demo   and   make test
VENV := .venv
PY := $(VENV)/bin/python
DEMO_CT := DrasCLRSlicer/drasclr/data/demo_ct.nii.gz
REAL := ../shared/data/real

.PHONY: setup demo test lint bench demo-model cmake-lists clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/drasclr analyze $(DEMO_CT) -o demo-out --overwrite

test: setup
	$(VENV)/bin/ruff check .
	$(PY) scripts/update_cmake_lists.py --check
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

# Speed and memory benchmarks (numbers and machines in BENCHMARKS.md)
bench: setup
	PYTHONPATH=DrasCLRSlicer $(PY) bench/bench_condconv.py --n 581 --batch 581 --repeat 3
	PYTHONPATH=DrasCLRSlicer $(PY) bench/bench_analyze.py $(REAL)/lidc_idri_0001.nii.gz
	PYTHONPATH=DrasCLRSlicer $(PY) bench/bench_anatomy.py --real $(REAL)
	PYTHONPATH=DrasCLRSlicer $(PY) bench/bench_phantom.py speed

# Rebuild the bundled models: demo-light-v1 (distilled from the bundled demo-v5, docs/demo_model.md). demo-v5, the
# default, from scratch: scripts/build_demo_v5.sh; the candidates demo-v6 / v7 / v8: scripts/build_demo_model.sh,
# scripts/build_demo_v7.sh, scripts/build_demo_v8.sh (docs/acquisition.md)
demo-model: setup
	bash scripts/build_light_model.sh

cmake-lists: setup
	$(PY) scripts/update_cmake_lists.py

clean:
	rm -rf demo-out .pytest_cache .ruff_cache
