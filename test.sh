#!/usr/bin/env bash
# Runs every test: unit, property, storage-suite and black-box cluster tests.
# The black-box tests build and start real `quotad` processes themselves.
#
# Two passes: first everything but the black-box cluster tests (in parallel, with the
# other tests that start nodes kept serial by .config/nextest.toml), then the cluster
# tests alone. They assert election timing after a kill -9 ("a new leader within two
# election timeouts"), which a 2-core machine busy with other tests can miss.
set -euo pipefail
cd "$(dirname "$0")"
# The AWS-compatible API's tests drive the real AWS CLI (from PyPI).
if ! command -v aws >/dev/null 2>&1 && ! python3 -m awscli --version >/dev/null 2>&1; then
    echo "installing the AWS CLI for the AWS-compatible API tests (python3 -m pip install awscli)" >&2
    python3 -m pip install --quiet --disable-pip-version-check awscli
fi
cargo build --workspace --bins --locked
cluster='package(quota-blackbox) & kind(test) & binary(cluster)'
cargo nextest run --workspace --locked --no-fail-fast -E "not ($cluster)" "$@"
exec cargo nextest run --workspace --locked --no-fail-fast -E "$cluster" "$@"
