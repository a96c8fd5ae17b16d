# The two commands a user needs:
#   make demo   set up .venv, make the built-in sample dataset, train, evaluate and draw
#   make test   set up .venv and run the test suite
# Both create .venv on first use; later runs reuse it until the requirement files change.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# make demo settings: small, from-scratch model that trains in a few minutes on 2 CPU cores.
DEMO_DATA ?= sample
DEMO_OUT  ?= runs/demo

.PHONY: all demo test venv clean

all: demo

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt -c constraints.txt
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	@echo "demo: not wired yet"

clean:
	rm -rf $(DEMO_OUT) $(DEMO_DATA) .pytest_cache
