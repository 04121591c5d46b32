# secure-model-operator. `make demo` and `make test` install everything they need on a fresh machine.
# Slow downloads and Go builds are cached outside the repository (SECUREMODELS_CACHE), keyed by version.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
JUDGES_VENV := .venv-judges
export SECUREMODELS_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/secure-model-operator
# kubectl and helm come from a pinned npm package (hack/fetch-kubectl-helm.sh).
TOOLS_DIR := $(SECUREMODELS_CACHE)/kubectl-layer-2.2.2
export KUBECTL := $(TOOLS_DIR)/kubectl
export HELM := $(TOOLS_DIR)/helm
export PATH := $(CURDIR)/$(VENV)/bin:$(TOOLS_DIR):$(PATH)
export JUDGES_BIN := $(CURDIR)/$(JUDGES_VENV)/bin

CRD := crds/securemodels.io_securemodeldeployments.yaml
CHART := charts/secure-model-operator
PYTHON_SOURCES := operator hack tests bench

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# ---------------------------------------------------------------------------------------------- install

$(VENV)/.installed: pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/dev.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# checkov and network-config-analyzer pin conflicting versions of shared libraries: their own venv.
$(JUDGES_VENV)/.installed: requirements/judges.lock
	$(PYTHON) -m venv $(JUDGES_VENV)
	$(JUDGES_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/judges.lock
	touch $@

$(KUBECTL) $(HELM) &:
	hack/fetch-kubectl-helm.sh >/dev/null

.PHONY: install
install: $(VENV)/.installed $(JUDGES_VENV)/.installed $(KUBECTL) controlplane nginx ## everything the tests and demo need

.PHONY: controlplane
controlplane: ## build (once) kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok
	hack/build-controlplane.sh >/dev/null

.PHONY: nginx
nginx: ## fetch (once) Debian's nginx for the mTLS handshake tests
	hack/fetch-nginx.sh >/dev/null

# ------------------------------------------------------------------------------------------- generate

.PHONY: crds
crds: $(VENV)/.installed ## regenerate the CRD from the pydantic models
	$(VENV)/bin/securemodels crd --output $(CRD)
	cp $(CRD) $(CHART)/crds/

# ----------------------------------------------------------------------------------------------- check

.PHONY: lint
lint: $(VENV)/.installed $(KUBECTL) ## ruff, mypy, import rules, hadolint, helm lint
	$(VENV)/bin/ruff check $(PYTHON_SOURCES)
	$(VENV)/bin/ruff format --check $(PYTHON_SOURCES)
	$(VENV)/bin/mypy operator hack tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile
	$(HELM) lint --strict $(CHART)

.PHONY: test
test: install lint ## install everything, then run every test
	SECUREMODELS_ASSETS=$$(hack/build-controlplane.sh) NGINX=$$(hack/fetch-nginx.sh) \
	  $(VENV)/bin/pytest tests

.PHONY: unit
unit: $(VENV)/.installed ## only the fast unit tests
	$(VENV)/bin/pytest tests/unit

# ------------------------------------------------------------------------------------------------ use

.PHONY: demo
demo: install ## start a local control plane, run the operator, apply examples/basic.yaml, show the result
	SECUREMODELS_ASSETS=$$(hack/build-controlplane.sh) $(VENV)/bin/python hack/demo.py

.PHONY: bench
bench: install ## measure and write BENCHMARKS.md
	SECUREMODELS_ASSETS=$$(hack/build-controlplane.sh) PYTHONPATH=hack $(VENV)/bin/python -m bench

.PHONY: clean
clean: ## remove the virtual environments (the cache outside the repository stays)
	rm -rf $(VENV) $(JUDGES_VENV) .pytest_cache .mypy_cache .ruff_cache
