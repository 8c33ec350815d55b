# The two commands: `make demo` and `make test`. Both create/refresh the virtual environment
# first (tools/setup_env.sh); the stamp makes a second call install nothing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.distill-env-stamp
QUICK ?= 0
OPS_SOURCES := $(shell find ops/csrc -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' \) 2>/dev/null)

.PHONY: env demo test lint clean-env

$(STAMP): tools/setup_env.sh setup.py $(OPS_SOURCES)
	VENV=$(VENV) bash tools/setup_env.sh
	touch $@

env: $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py $(if $(filter 1,$(QUICK)),--quick,)

test: $(STAMP)
	$(PY) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check distill tools tests configs benchmarks

clean-env:
	rm -rf $(VENV)
