# Targets wrap the scripts in hack/, which install what they need first.
SHELL := /bin/bash
STATICCHECK_VERSION ?= v0.8.2
DEADCODE_VERSION ?= v0.44.0

.PHONY: build test bench lint fmt soak conformance

# build: the release binaries into bin/ (static): the node agent, the CNI plugin, valectl
# and the kubectl plugin (kubectl-epair: put it on the PATH to get "kubectl epair").
build:
	. hack/ensure-go.sh && mkdir -p bin && \
	CGO_ENABLED=0 go build -o bin/ ./cmd/node-agent ./cmd/epair-cni ./cmd/valectl ./cmd/kubectl-epair ./cmd/nm-pktgen

test:
	./hack/test.sh

bench:
	./hack/bench.sh

# soak: the churn soak of issue 16 (e2e/cni TestChurnSoak) at full length: 10000 ADD/DEL
# cycles through libcni, 8 at a time, with 3 SIGKILLs of the agent (needs root).
soak:
	. hack/ensure-go.sh && EPAIR_SOAK_CYCLES=10000 EPAIR_SOAK_CRASHES=3 go test -count=1 -timeout 120m -run TestChurnSoak -v ./e2e/cni/

# conformance: the Kubernetes [sig-network] [Conformance] specs (e2e.test of the cluster's
# Kubernetes version, built from source with its images and cached in ~/.cache/epair)
# against a real single-node cluster with epair installed by Helm; prints every spec's
# result and the pass/fail/skip counts (needs root; hack/k8s/conformance.sh, e2e/k8s/README.md).
conformance:
	. hack/ensure-go.sh && hack/k8s/conformance.sh

lint:
	. hack/ensure-go.sh && \
	out=$$(gofmt -l $$(git ls-files '*.go')) && { [ -z "$$out" ] || { echo "gofmt would change:"; echo "$$out"; exit 1; }; } && \
	go vet ./... && \
	go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./... && \
	./hack/deadcode.sh

fmt:
	gofmt -w $$(git ls-files '*.go')
