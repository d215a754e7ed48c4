# Two commands for a fresh machine: `make run` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PERCEPTUAL_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: run test install clean-venv

install: $(STAMP)

# Reinstall whenever pyproject.toml changes; the venv itself is created once.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off -e '.[test]'
	@touch $@

# The pipeline in dvc.yaml; the venv's bin on PATH so its stages find python, dvc and ray.
run: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" DVC_NO_ANALYTICS=1 $(VENV)/bin/dvc repro

test: $(STAMP)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
