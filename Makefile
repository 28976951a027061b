# Targets wrap the scripts in hack/, which install what they need first.
SHELL := /bin/bash
STATICCHECK_VERSION ?= v0.8.2
DEADCODE_VERSION ?= v0.44.0

.PHONY: test bench lint fmt

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
