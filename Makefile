# The two commands: `make demo` (synthetic data + tiny model, end to end) and `make test`.
# Both create .venv on first use (pip resolves torch/torchvision from this machine's cache).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast lint bench clean

$(VENV)/.installed: requirements.txt requirements-eval.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt -r requirements-eval.txt
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) demo.py

# one thread per process: the tiny model gains nothing from more, and tests start several processes
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -p no:cacheprovider

test-fast: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -p no:cacheprovider -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench.py

clean:
	rm -rf runs results .pytest_cache
