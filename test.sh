#!/usr/bin/env bash
# Runs every test: unit, property, storage-suite and black-box cluster tests.
# The black-box tests build and start real `quotad` processes themselves.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --workspace --bins --locked
exec cargo nextest run --workspace --locked --no-fail-fast "$@"
