# The two set-up commands of README: `make demo` (the main job) and `make test`.
# Each creates .venv and installs what is needed when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= kernel,plots,log,dev,sweep
# triton ships wheels for Linux x86-64 only; there its engine is tested on the CPU (TRITON_INTERPRET=1)
ifeq ($(shell uname -sm),Linux x86_64)
EXTRAS := $(EXTRAS),triton
endif

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, at the version this project is tested with. pip takes the build its index serves:
	# the CPU build on macOS and Windows, the (larger) CUDA build from PyPI on Linux. For the CPU build
	# on Linux install torch first yourself (pip install torch==2.13.0 --index-url
	# https://download.pytorch.org/whl/cpu): this step is skipped when torch imports.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/plasticnet demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
