#!/usr/bin/env bash
# The whole test suite: starts the servers the tests talk to (installing them when missing), then
# runs every test. Used by .ci/run; a server that cannot start fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
# No test reads standard input: an empty one, whatever the caller had (see .ci/run).
exec </dev/null

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

# hudi-rs, the independent reader the Hudi tests check tables with, and fastavro, which reads
# the Avro timeline instants.
# cargo-lambda serves the Lambda Runtime API tests/lambda.rs drives the function through, and
# cfn-lint checks the Lambda deployment template.
if ! python3 -c "import hudi, fastavro" >/dev/null 2>&1 ||
  ! command -v cargo-lambda >/dev/null 2>&1 || ! command -v cfn-lint >/dev/null 2>&1; then
  python3 -m pip install --quiet -r tests/requirements.txt
fi

# Chromium (Debian's package), the headless browser the status page is checked with.
if ! command -v chromium >/dev/null 2>&1; then
  { apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y --no-install-recommends chromium >/dev/null; }; } ||
    { echo "chromium could not be installed" >&2; exit 1; }
fi
export TALLY_TEST_CHROMIUM=${TALLY_TEST_CHROMIUM:-$(command -v chromium)}

# shellcheck source=tests/servers/garage.sh
source tests/servers/garage.sh || { echo "the S3 test server (garage) did not start" >&2; exit 1; }
# shellcheck source=tests/servers/postgres.sh
source tests/servers/postgres.sh || { echo "the PostgreSQL test server did not start" >&2; exit 1; }
# shellcheck source=tests/servers/mariadb.sh
source tests/servers/mariadb.sh || { echo "the MariaDB test server did not start" >&2; exit 1; }
trap 'garage_stop; postgres_stop; mariadb_stop' EXIT

# CI compiles once, from a clean checkout: incremental compilation's caches (several GB for
# this crate's test binaries) would only take disk, which a CI run once ran out of.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0
fi

cargo fmt --all -- --check
# Checked for the regions named, not the S3 test server's AWS_REGION.
cfn-lint --regions us-east-1 us-west-2 eu-west-1 -- bootstrap/lambda/template.yaml
cargo clippy --all-targets --locked -- -D warnings
# The opt-in features: `lambda` adds the Lambda function and its tests, `distributed` the Ballista
# cluster (`tally cluster`, `run --cluster`) and tests/cluster.rs; every other test is the same.
# Tests and doc tests build once, with both: one dependency tree instead of three.
FEATURES=lambda,distributed
cargo clippy --all-targets --locked --features "$FEATURES" -- -D warnings
cargo nextest run --locked --no-fail-fast --features "$FEATURES" "$@"
cargo test --locked --doc --features "$FEATURES"
