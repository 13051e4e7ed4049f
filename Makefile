# pullsecret-injector: run `make help` for the targets.

K8S_VERSION ?= 1.37.2
ETCD_VERSION ?= v3.6.16
REGISTRY_VERSION ?= v3.1.2
HELM_VERSION ?= v3.22.0
GOLANGCI_LINT_VERSION ?= v2.15.0
HELM_DOCS_VERSION ?= v1.14.2
# Each fuzz target runs for an execution count of its own in `make fuzz` (FUZZ_TARGETS below), sized to
# about five seconds of fuzzing on a quiet 2-core machine, after the seed corpus's baseline. A count, not
# a duration: with a duration the Go fuzz coordinator (before Go 1.27) can report its own deadline as a
# failure (docs/development.md#fuzzing).
# FUZZTIME overrides every target's budget (for example FUZZTIME=500000x, or FUZZTIME=10m for a long local
# run); FUZZMINIMIZETIME bounds the minimisation of each new input, also as a count.
FUZZTIME ?=
FUZZMINIMIZETIME ?= 200x

BIN := $(CURDIR)/bin
CONTROLPLANE := $(BIN)/k8s/$(K8S_VERSION)
REGISTRY := $(BIN)/registry/$(REGISTRY_VERSION:v%=%)/registry
HELM := $(BIN)/helm
GOLANGCI_LINT := $(BIN)/golangci-lint
HELM_DOCS := $(BIN)/helm-docs
IMG ?= ghcr.io/pullsecret-injector/pullsecret-injector:dev
PLATFORMS ?= linux/amd64,linux/arm64
# What --version prints and pullsecret_injector_build_info shows: the release and commit the binary is built
# from, passed to the linker by `make build` and as build arguments to the image build.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# The package holding them; the Dockerfile's build command spells it the same way (test/chart checks it).
VERSION_PKG := github.com/pullsecret-injector/pullsecret-injector/internal/version
# docker-buildx pushes: a multi-platform image cannot be loaded into the local engine.
BUILDX_FLAGS ?= --push

export KUBEBUILDER_ASSETS := $(CONTROLPLANE)
export REGISTRY_BINARY := $(REGISTRY)

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: build
build: ## Build bin/pullsecret-injector.
	CGO_ENABLED=0 go build -trimpath -ldflags "-X ${VERSION_PKG}.Version=${VERSION} -X ${VERSION_PKG}.Commit=${COMMIT}" -o $(BIN)/pullsecret-injector .

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: controlplane
controlplane: $(CONTROLPLANE)/kube-apiserver ## Build etcd and kube-apiserver from source into bin/k8s (cached).

$(CONTROLPLANE)/kube-apiserver $(CONTROLPLANE)/etcd: hack/build-controlplane.sh
	K8S_VERSION=v$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) hack/build-controlplane.sh $(CONTROLPLANE)

.PHONY: registry
registry: $(REGISTRY) ## Build the CNCF distribution registry the pull test runs into bin/registry (cached).

$(REGISTRY): hack/build-registry.sh
	REGISTRY_VERSION=$(REGISTRY_VERSION) hack/build-registry.sh $(dir $(REGISTRY))

##@ Test

# Every step runs even when an earlier one fails, so that one red step does not hide the state of the
# others; the target fails at the end if any step failed, and says which.
.PHONY: test
test: ## Run every test: unit, a bounded fuzz run, and end-to-end against a real kube-apiserver.
	@failed=; \
	for step in test-unit fuzz test-e2e; do \
		$(MAKE) --no-print-directory $$step || failed="$$failed $$step"; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: failed:$$failed" >&2; exit 1; fi; \
	echo "make test: every step passed"

.PHONY: test-unit
test-unit: ## Run the tests that need no control plane.
	go test -race -count=1 $$(go list ./... | grep -v /test/) ./test/docs

# -fuzz takes one target per package and run, hence one run per target: package, target and execution
# budget. Inputs that add coverage stay in the Go build cache (go env GOCACHE); only a failing input is
# written, to <package>/testdata/fuzz/<target>/. Every target runs even when an earlier one fails.
FUZZ_TARGETS := \
	./config:FuzzMatch:20000x \
	./config:FuzzMatchImage:7000x \
	./config:FuzzCovers:25000x \
	./config:FuzzExplain:25000x \
	./config:FuzzPatternRegexp:9000x \
	./internal/policy:FuzzNormalizeImage:1500x \
	./internal/policy:FuzzPolicyAgreesWithWebhook:900x \
	./internal/policy:FuzzInjectedAnnotationAgrees:1300x \
	./internal/policy:FuzzSelectorExpression:60x \
	./internal/dockerconfig:FuzzCheck:18000x \
	./internal/redact:FuzzText:150000x \
	./internal/checkcmd:FuzzReport:1200x \
	./webhook:FuzzServeAdmission:4000x \
	./webhook:FuzzHandlePod:7000x \
	./webhook:FuzzDirectPatch:5000x

.PHONY: fuzz
fuzz: ## Run each fuzz target for its execution budget (FUZZ_TARGETS; FUZZTIME overrides) from its seed corpus.
	@failed=; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; target=$${rest%%:*}; budget=$${rest#*:}; \
		ft='$(FUZZTIME)'; ft=$${ft:-$$budget}; echo "fuzz: $$pkg $$target for $$ft"; \
		go test -run '^$$' -fuzz "^$$target\$$" -fuzztime "$$ft" \
			-fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg || failed="$$failed $$target"; \
	done; \
	if [ -n "$$failed" ]; then echo "make fuzz: failed:$$failed (inputs under <package>/testdata/fuzz/)" >&2; exit 1; fi

.PHONY: test-e2e
test-e2e: controlplane registry $(HELM) ## Run only the end-to-end tests (test/chart drives the helm binary; the pull test runs the registry).
	HELM=$(HELM) go test -count=1 -timeout 20m ./test/...

# The load programs' knobs: SCALE is the number of namespaces (and copies) of bench-scale; BENCH_ARGS and
# SCALE_ARGS pass further flags (`go run ./test/bench admission -h`, `go run ./test/bench scale -h`).
SCALE ?= 10000
BENCH_ARGS ?=
SCALE_ARGS ?=

.PHONY: bench
# The load programs first: they need nothing the in-process benchmarks build.
bench: bench-admission bench-scale bench-go ## Run the benchmarks (they report numbers; they never fail on timing).

.PHONY: bench-go
bench-go: controlplane ## Run the in-process `go test -bench` benchmarks.
	go test -run '^$$' -bench . -benchmem ./...

.PHONY: bench-admission
bench-admission: controlplane ## Compare Pod admission with no webhook, a no-op webhook and this one, through a real API server.
	go run ./test/bench admission $(BENCH_ARGS)

.PHONY: bench-scale
bench-scale: controlplane ## Measure memory, readiness and a rotation's fan-out with SCALE (default 10000) copies.
	go run ./test/bench scale -namespaces $(SCALE) $(SCALE_ARGS)

##@ Ship

.PHONY: helm-lint
helm-lint: $(HELM) ## Lint the Helm chart (strict: warnings fail).
	$(HELM) lint --strict charts/pullsecret-injector

.PHONY: helm-docs
helm-docs: $(HELM_DOCS) ## Regenerate docs/chart.md and the chart's README.md from values.yaml and their templates.
	HELM_DOCS=$(HELM_DOCS) hack/helm-docs.sh write

.PHONY: helm-docs-check
helm-docs-check: $(HELM_DOCS) ## Fail if docs/chart.md or the chart's README.md is not what make helm-docs generates.
	HELM_DOCS=$(HELM_DOCS) hack/helm-docs.sh check

.PHONY: docker-build
docker-build: ## Build the container image IMG for this machine's platform.
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMG) .

.PHONY: docker-buildx
docker-buildx: ## Build the container image IMG for every platform in PLATFORMS and push it.
	docker buildx build --platform $(PLATFORMS) --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMG) $(BUILDX_FLAGS) .

##@ Demo

.PHONY: demo
demo: controlplane ## Run the webhook on an embedded control plane and show a Pod get its pull secret.
	go run ./hack/demo

##@ Tools

$(GOLANGCI_LINT):
	GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: helm
helm: $(HELM) ## Build the pinned helm into bin/ (the chart tests and helm-lint use it).

$(HELM):
	GOBIN=$(BIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(HELM_DOCS):
	GOBIN=$(BIN) go install github.com/norwoodj/helm-docs/cmd/helm-docs@$(HELM_DOCS_VERSION)

.PHONY: clean
clean: ## Remove built binaries, but keep the control plane cache.
	rm -f $(BIN)/pullsecret-injector
