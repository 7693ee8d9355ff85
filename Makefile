# Membrane: `make test` installs what it needs and runs every test; `make demo` runs the local demo.
SHELL := /bin/bash
# Every command runs on the pinned Node.js (.node-version) that `deps` installs into .tools/node.
export PATH := $(CURDIR)/.tools/node/bin:$(PATH)
BENCHES := $(notdir $(wildcard bench/*))
BENCHES := $(filter-out README.md lib,$(BENCHES))

.PHONY: deps build image test test-unit test-kernel test-e2e test-realnode test-conformance-wireguard test-upstream test-dns-soak test-l7-slowloris typecheck lint demo bench down verifier-report

deps:
	bash scripts/install-deps.sh

# The bundled JavaScript (dist/membrane.mjs and its chunks, scripts/bundle.ts): rebuilt only when a source it was
# built from is newer (dist/membrane.mk lists them). `node dist/membrane.mjs …` or `MEMBRANE_BUNDLE=1 bin/membrane …` runs it.
build: dist/membrane.mjs

-include dist/membrane.mk
dist/membrane.mjs:
	node --import tsx scripts/bundle.ts

# The image (Containerfile) under the name the chart's default `image:` names (charts/README.md "The image"):
# IMAGE_REPOSITORY:<package.json version>. Needs docker, podman or buildah (CONTAINER_ENGINE to choose).
IMAGE_REPOSITORY := ghcr.io/membrane/membrane
IMAGE_TAG ?= $(shell sed -n 's/^  "version": "\(.*\)",$$/\1/p' package.json)
CONTAINER_ENGINE ?= $(firstword $(foreach e,docker podman buildah,$(shell command -v $(e) 2>/dev/null)))
image:
	@[ -n "$(CONTAINER_ENGINE)" ] || { echo "make image: no docker, podman or buildah on PATH (set CONTAINER_ENGINE)" >&2; exit 1; }
	$(CONTAINER_ENGINE) build -f Containerfile -t $(IMAGE_REPOSITORY):$(IMAGE_TAG) .

typecheck: deps
	npx tsc --noEmit -p tsconfig.json

lint: deps
	npx eslint --max-warnings 0 .

test-unit: deps
	bash scripts/run-tests.sh scripts core crds kube flowapi webhooks controllers cli charts

test-kernel: deps
	bash scripts/run-tests.sh bpf node-agent

test-e2e: deps
	bash scripts/run-tests.sh $(BESIDE) localcluster e2e

# The real node alone (containerd + kubelet, localcluster/realnode; also part of test-e2e and test).
test-realnode: deps
	bash scripts/run-tests.sh localcluster/realnode

# The NetworkPolicy conformance model with WireGuard in strict mode between two process-based nodes alone (`dev up
# --encryption`, refused on real nodes; make test runs it beside the rest, and the model on real pods without it in
# localcluster/realnode/realnode.test.ts).
test-conformance-wireguard: deps
	node --import tsx --test --test-reporter=spec e2e/conformance.e2e.test.ts

# The upstream NetworkPolicy e2e suite (the pinned Kubernetes module's specs matching `[sig-network] Netpol` or
# `NetworkPolicy`: the 50 Netpol specs, no other in v1.36.3; SCTP left out) against a real node with Membrane installed
# by its chart; writes upstream-results/summary.json (make test runs four of its specs: localcluster/upstream/
# netpol.test.ts). UPSTREAM_ARGS passes --focus/--skip/--timeout-minutes/--shards.
test-upstream: deps
	node --import tsx localcluster/upstream/main.ts --out upstream-results $(UPSTREAM_ARGS)

# The DNS soak alone: 10,000 lookups of fresh names, each followed at once by a connect, through the real proxy and
# datapath (make test runs the same file with 1,000; root, loads eBPF; ~1 min).
test-dns-soak: deps
	DNS_SOAK_LOOKUPS=10000 node --import tsx --test node-agent/dns/dns-soak.test.ts

# The L7 proxy's slowloris check with 1,000 connections sending their head one byte a second (make test runs it
# with 200): other clients served, the proxy's RSS bounded, every slow connection cut at the head timeout (~20 s).
test-l7-slowloris: deps
	SLOWLORIS_CONNECTIONS=1000 node --import tsx --test node-agent/l7proxy/slowloris.test.ts

# The files on real nodes (kubelets, containerd) run one after another in a second runner beside the rest: they mostly
# wait on pods, so they cost the run little besides their own time (scripts/run-tests.sh --beside). They must not overlap
# each other (each changes host sysctls). The WireGuard conformance variant (process-based nodes) runs there too: that
# runner is the shorter one.
BESIDE = --beside localcluster/realnode/realnode.test.ts --beside localcluster/upstream/netpol.test.ts \
	--beside e2e/demo.e2e.test.ts --beside e2e/conformance.e2e.test.ts

test: deps typecheck lint
	bash scripts/run-tests.sh $(BESIDE) scripts core crds kube flowapi webhooks controllers cli charts bench bpf node-agent localcluster e2e

demo: deps
	bash localcluster/demo.sh

down:
	bin/membrane dev down

bench: deps
	@for b in $(BENCHES); do $(MAKE) -s bench-$$b || exit 1; done

bench-startup: build
bench-scale: build
# scale runs the operator as shipped (the bundle) as well; BENCH_OPERATOR_BUNDLE=0 runs it through tsx instead.
bench-scale: export BENCH_OPERATOR_BUNDLE ?= 1
# realize measures the operator as shipped (the bundle); BENCH_OPERATOR_BUNDLE=0 runs it through tsx instead.
bench-realize: build
bench-realize: export BENCH_OPERATOR_BUNDLE ?= 1
bench-cni: build
# l7 runs the proxy as shipped (the bundle); BENCH_PROXY_BUNDLE=0 runs it through tsx instead.
bench-l7: build
bench-l7: export BENCH_PROXY_BUNDLE ?= 1

bench-%: deps
	node --import tsx bench/$*/main.ts

# Each shipped eBPF program's verifier cost on this kernel (processed instructions and share of the limit, one JSON
# line): bench/verifier; root, loads eBPF (flock /tmp/membrane-kernel.lock on a shared machine), ~5 s idle.
verifier-report: bench-verifier
