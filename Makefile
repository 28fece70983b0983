# Three commands: `make demo`, `make test` and `make lint`. Each creates .venv when missing and
# installs the package with the exact versions in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs/demo
CLAIMS := ponder pause procedural bolt combined
# Parallel test workers; the simulated 8-device mesh lives inside each worker.
TEST_WORKERS ?= 2

.PHONY: demo test lint install bench clean $(addprefix reproduce-,$(CLAIMS))

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[hf,interop,test,eval,tpu]'
	touch $(STAMP)

# Train, then a generated sample (text, and math with its latent thought) and the eval table.
demo: $(STAMP)
	$(VENV)/bin/ponder-train --config=configs/demo.py --workdir=$(WORKDIR)
	$(VENV)/bin/ponder-generate --model=$(WORKDIR) --prompt="HAMLET:" --prompt="37*46=" \
	    --max-new-tokens=48
	$(VENV)/bin/ponder-eval --workdir=$(WORKDIR)

# The rules in ruff.toml, which the code follows; .ci/run lints before it tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

# The papers' claims (configs/reproduce/, RESULTS.md): `make reproduce-pause TIER=claim`.
# TIER: smoke (seconds), mechanics (CPU-minutes, the default) or claim (the paper's effect).
TIER ?= mechanics
PARALLEL ?= 1
$(addprefix reproduce-,$(CLAIMS)): reproduce-%: $(STAMP)
	$(VENV)/bin/ponder-sweep --config=configs/reproduce/$*.py:$(TIER) \
	    --workdir=runs/reproduce/$*-$(TIER) --parallel=$(PARALLEL)

bench: $(STAMP)
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
