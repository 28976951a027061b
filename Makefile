# Targets wrap the scripts in hack/, which install what they need first.
SHELL := /bin/bash
STATICCHECK_VERSION ?= v0.8.2
DEADCODE_VERSION ?= v0.44.0

.PHONY: build test bench lint fmt

# build: the release binaries into bin/ (static): the node agent, the CNI plugin, valectl
# and the kubectl plugin (kubectl-epair: put it on the PATH to get "kubectl epair").
build:
	. hack/ensure-go.sh && mkdir -p bin && \
	CGO_ENABLED=0 go build -o bin/ ./cmd/node-agent ./cmd/epair-cni ./cmd/valectl ./cmd/kubectl-epair

test:
	./hack/test.sh

bench:
	./hack/bench.sh

lint:
	. hack/ensure-go.sh && \
	out=$$(gofmt -l $$(git ls-files '*.go')) && { [ -z "$$out" ] || { echo "gofmt would change:"; echo "$$out"; exit 1; }; } && \
	go vet ./... && \
	go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./... && \
	./hack/deadcode.sh

fmt:
	gofmt -w $$(git ls-files '*.go')
