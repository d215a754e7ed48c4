# Two commands for a fresh machine: `make run` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PERCEPTUAL_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: run exp test test-fast install clean-venv services-up services-down

install: $(STAMP)

# Reinstall whenever pyproject.toml changes; the venv itself is created once.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off -e '.[test]'
	@touch $@

# The pipeline in dvc.yaml (`dvc repro`, with stage i of n and the elapsed time: pipelines/make_run.py);
# the venv's bin on PATH so its stages find python, dvc and ray.
run: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" DVC_NO_ANALYTICS=1 $(PY) -m pipelines.make_run

# `dvc exp show` a screen wide (pipelines/exp_view.py): the params and metrics that differ between the
# experiments, short names, none of the hash columns DVC adds per code and data path (~270 columns otherwise).
# DVC's own flags go in EXP, e.g. make exp EXP='-A --keep train.lr'.
exp:
	DVC_NO_ANALYTICS=1 $(PY) -m pipelines.exp_view $(EXP)

# A test process that dies without a summary lost its Ray head: print the head's error lines too.
test: $(STAMP)
	$(PY) -m pytest || { rc=$$?; $(PY) -m pipelines.ray_logs tmp/ray; exit $$rc; }

# The development loop (a few minutes here): the suite less the tests marked `slow`, keeping one real
# smoke test each of Ray, MLflow, DVC, the S3 server and the published anchors. CI runs `make test`.
test-fast: $(STAMP)
	$(PY) -m pytest -m '(smoke or not slow) and not full' || { rc=$$?; $(PY) -m pipelines.ray_logs tmp/ray; exit $$rc; }

# Local Ray head (dashboard/Jobs API), MLflow server and S3 endpoint on 127.0.0.1 (perceptual_services/);
# their addresses go to tmp/services/services.env: `set -a; . tmp/services/services.env; set +a`.
services-up: $(STAMP)
	$(PY) -m perceptual_services up

# Stops exactly the processes services-up started (by PID, re-checked), nothing else.
services-down:
	@if [ -x $(PY) ]; then $(PY) -m perceptual_services down; else echo "no $(VENV): nothing to stop"; fi

clean-venv:
	rm -rf $(VENV)
