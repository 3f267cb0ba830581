#!/usr/bin/env bash
# `make lint`: formatting and clippy (warnings are errors) for the whole workspace. The extension
# is checked with its pg_test feature so that the #[pg_test] code is linted too.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"
cd "$VOXPERF_ROOT"

voxperf_banner "lint: cargo fmt --check"
cargo fmt --all --check
voxperf_banner "lint: clippy (voxperfd, voxperf-e2e, voxlink-demo)"
cargo clippy -p voxperfd -p voxperf-e2e -p voxlink-demo --all-targets -- -D warnings
voxperf_banner "lint: clippy (extension, features pg15 pg_test)"
(cd pg_ext && cargo clippy --all-targets --features "pg15 pg_test" -- -D warnings)
