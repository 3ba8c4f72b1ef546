# Two commands do all set-up on a fresh Debian machine: `make quickstart` and `make test`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup quickstart test test-slow lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/robolearn loop --config-name quickstart

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check robolearn envs tests bench tools && $(VENV)/bin/ruff format --check robolearn envs tests bench tools

clean:
	rm -rf $(VENV) runs outputs
