# imgmount: mount container image tarballs without extracting them.
#
#   make example   install the tools (Debian packages), build imgmount and the
#                  bundled example image, mount it and look around
#   make test      vet, gofmt, unit tests with -race, a short fuzz pass (20s
#                  per target), then the integration tests (real images, real
#                  mounts; root and /dev/fuse needed)
#   make fuzz      every fuzz target for FUZZTIME each (default 60s)
#   make build | install | lint | bench | bench-quick | clean | distclean

SHELL := /bin/bash
# Go lives in /usr/local/go on our machines; PATH may lack it.
export PATH := $(PATH):/usr/local/go/bin

GO      ?= go
PREFIX  ?= /usr/local
BIN     := bin/imgmount
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

GOFILES = $(shell find . -name '*.go' -not -path './.git/*' -not -path './integration/testdata/*')

.PHONY: build test setup vet fmt-check unit fuzz fuzz-short integration bench bench-quick install example lint clean distclean pjdfstest

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/imgmount

# Installs the Debian packages the tests and the example need, only if one
# of them is missing.
setup:
	@scripts/setup.sh --check >/dev/null 2>&1 || scripts/setup.sh

test: setup vet fmt-check unit fuzz-short integration

vet:
	$(GO) vet ./...
	$(GO) vet -tags pjdfstest ./integration/

fmt-check:
	@out="$$(gofmt -l $(GOFILES))"; \
	if [ -n "$$out" ]; then echo "gofmt would change these files:"; echo "$$out"; exit 1; fi; \
	echo "gofmt: ok"

# Every package but the integration tests, with the race detector.
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/integration$$')

# Every parser a hostile image reaches has a fuzz target (scripts/fuzz.sh
# lists them as it runs, from the packages whose tests hold a func Fuzz);
# make test gives each 20 seconds (twelve targets, about four and a half
# minutes), make fuzz a minute or FUZZTIME. Each starts from the seeds in
# its code and the corpus committed in its package's testdata/fuzz/, where
# crashers land too.
FUZZTIME ?= 60s
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

fuzz-short:
	FUZZTIME=20s scripts/fuzz.sh

# Builds the test images on first use (debootstrap, umoci, skopeo: about a
# minute) into integration/testdata/out, and reuses them afterwards.
integration:
	$(GO) test -count=1 -v -timeout 40m ./integration/

# The pjdfstest POSIX suite (issue #3) in a writable mount; needs a copy of
# pjdfstest built by hand outside the repository (PJDFSTEST_DIR, see
# scripts/pjdfstest.sh), so it is not part of make test. The kernel
# overlayfs baseline: scripts/pjdfstest.sh overlayfs.
pjdfstest:
	$(GO) test -tags pjdfstest -count=1 -v -run 'TestPjdfstest$$' -timeout 60m ./integration/

# Benchmarks against the alternatives (issue #4), as root: builds the images
# it needs (the Debian one with the integration tests' script), installs the
# alternatives (integration/bench/tools.sh), runs every row and writes the
# table into BENCHMARKS.md and README.md. About 15 minutes on two cores;
# bench-quick runs a smaller set in under 2 and only prints its table (also
# kept in $$BENCH_DIR, default /var/tmp/imgmount-bench, as quick.md).
# RATARMOUNT="python3 .../ratarmount.py" (or ~/.cache/imgmount-dev/ratarmount.sh,
# see integration/bench/tools.sh) adds ratarmount's rows. One row or a few:
# go run ./integration/bench/driver -only KEY,... (-h lists the keys).
bench: setup
	integration/bench/tools.sh
	$(GO) run ./integration/bench/driver -out BENCHMARKS.md -readme README.md

bench-quick: setup
	integration/bench/tools.sh
	$(GO) run ./integration/bench/driver -quick

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/imgmount

example: setup build
	example/build.sh
	example/demo.sh

lint:
	@sc="$$(command -v staticcheck || true)"; \
	[ -n "$$sc" ] || { [ -x "$$($(GO) env GOPATH)/bin/staticcheck" ] && sc="$$($(GO) env GOPATH)/bin/staticcheck"; }; \
	if [ -n "$$sc" ]; then echo "$$sc ./..."; "$$sc" ./...; \
	else echo "staticcheck is not installed (scripts/setup.sh --lint installs it); running go vet only"; $(GO) vet ./...; fi

clean:
	rm -rf bin example/example.tar

# Also the cached test images and oracles (rebuilt by the next make test).
distclean: clean
	rm -rf integration/testdata/out
