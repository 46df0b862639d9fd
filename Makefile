# The two commands: `make demo` (synthetic data + tiny model, end to end) and `make test`.
# Both create .venv on first use (pip resolves torch/torchvision from this machine's cache).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup system-deps demo test test-fast lint bench clean

$(VENV)/.installed: requirements.txt requirements-eval.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt -r requirements-eval.txt
	touch $@

# Debian packages some metrics and tests need: WordNet 3.0 (NLTK METEOR), Java (coco-caption's tokenizer and
# METEOR 1.5), Chromium (the viewer's browser test). Run as root with apt-get, make installs the missing ones,
# once (quietly; log in .venv/apt.log); otherwise it says in one line what to run, and the tests that need
# them fail saying the same (make test skips nothing for a missing install).
$(VENV)/.system-deps:
	@mkdir -p $(VENV); missing=""; \
	command -v java >/dev/null 2>&1 || missing="$$missing default-jre-headless"; \
	{ [ -e /usr/share/wordnet/data.noun ] && [ -e /usr/share/wordnet/index.sense ]; } \
		|| missing="$$missing wordnet-base wordnet-sense-index"; \
	{ command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null 2>&1 \
		|| missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then touch $@; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing Debian packages:$$missing (log: $(VENV)/apt.log)"; \
		if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends $$missing; } >$(VENV)/apt.log 2>&1; then touch $@; \
		else echo "make: apt-get could not install$$missing (see $(VENV)/apt.log): METEOR / browser tests will fail"; fi; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "make: for METEOR and the viewer's browser test, run: sudo apt-get install -y$$missing"; \
	else echo "make: no apt-get here: install$$missing (or your system's equivalents) for METEOR and the browser test"; fi

system-deps: $(VENV)/.system-deps

setup: $(VENV)/.installed $(VENV)/.system-deps

demo: setup
	$(PY) tools/demo.py

# one thread per process: the tiny model gains nothing from more, and tests start several processes; one
# pytest worker per core (pytest-xdist; worksteal: an idle worker takes queued tests from a busy one), the slow
# tests first (tests/conftest.py) so that no core idles at the end
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -p no:cacheprovider -n auto --dist worksteal

test-fast: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -p no:cacheprovider -n auto --dist worksteal -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) tools/bench.py

clean:
	rm -rf runs results .pytest_cache
