# The two commands of the README: `make demo` and `make test`. Everything else is a building block.
SHELL := /usr/bin/env bash
CARGO ?= cargo
export TESTENV_STATE ?= $(CURDIR)/target/testenv

.PHONY: test demo demo-down cluster-up cluster-down tools lint fmt crds verify-crds unit e2e mock operator

## make test: fmt check, clippy -D warnings, unit + contract tests, e2e against the real control plane.
test:
	tests/run-tests.sh

## make demo: control plane + mock API + operator + sample PhoneNumbers, ending with them Ready.
demo:
	tests/demo.sh up

demo-down:
	tests/demo.sh down

## Build what is missing, start etcd + kube-apiserver + kube-controller-manager; print the kubeconfig.
cluster-up:
	@tests/cluster/up.sh

cluster-down:
	@tests/cluster/down.sh

## Build (or reuse from the cache) the Go-built tools and print their directory.
tools:
	@tests/cluster/build.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings

## Regenerate the CRD from the Rust types (and the chart's copy of it).
crds:
	$(CARGO) run --quiet --bin crdgen > crds/phonenumbers.oneinbox.ai.yaml
	mkdir -p charts/oneinbox-operator/crds
	cp crds/phonenumbers.oneinbox.ai.yaml charts/oneinbox-operator/crds/

unit:
	$(CARGO) test --all-features --lib --bins
