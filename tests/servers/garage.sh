#!/usr/bin/env bash
# Starts Garage (https://garagehq.deuxfleurs.fr, an S3-compatible object store, from crates.io) on
# loopback for the test suite, installing it first when missing. Source this file: it exports the
# standard AWS variables pointing at the server and TALLY_TEST_S3_BUCKET.
#
#   source tests/servers/garage.sh   # start (idempotent)
#   garage_stop                      # stop
# It does not change the caller's shell options; each step checks its own result.

GARAGE_VERSION=2.5.0
GARAGE_HOME=${GARAGE_HOME:-/tmp/tally-garage}
GARAGE_S3_PORT=${GARAGE_S3_PORT:-3900}
GARAGE_RPC_PORT=${GARAGE_RPC_PORT:-3901}
# Fixed test-only credentials for a server bound to 127.0.0.1 (Garage key formats: GK + 24 hex, 64 hex).
GARAGE_KEY_ID=GK31c2f218a2e44f485b94239e
GARAGE_SECRET=b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835
GARAGE_BUCKET=tally-test

garage_install() {
  if command -v garage >/dev/null 2>&1 && garage --version 2>/dev/null | grep -q ":$GARAGE_VERSION "; then
    return 0
  fi
  echo "installing garage $GARAGE_VERSION from crates.io (about 10 minutes on 2 cores)..." >&2
  cargo install garage --version "$GARAGE_VERSION" --locked --no-default-features \
    --features bundled-libs,lmdb >&2 || return 1
}

garage_cfg() { echo "$GARAGE_HOME/garage.toml"; }
garage_cli() { garage -c "$(garage_cfg)" "$@"; }

garage_start() {
  garage_install || return 1
  mkdir -p "$GARAGE_HOME/meta" "$GARAGE_HOME/data"
  cat > "$(garage_cfg)" <<CFG
metadata_dir = "$GARAGE_HOME/meta"
data_dir = "$GARAGE_HOME/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_public_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_secret = "4425f5c26c5e11581d3223904324dcb5b5d5dfb14e5e7f35e38c595424f5f1e6"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$GARAGE_S3_PORT"
root_domain = ".s3.garage.localhost"
CFG
  if ! garage_cli status >/dev/null 2>&1; then
    nohup garage -c "$(garage_cfg)" server > "$GARAGE_HOME/server.log" 2>&1 &
    echo $! > "$GARAGE_HOME/pid"
    for _ in $(seq 1 50); do
      garage_cli status >/dev/null 2>&1 && break
      sleep 0.2
    done
  fi
  garage_cli status >/dev/null || { cat "$GARAGE_HOME/server.log" >&2; echo "garage did not start" >&2; return 1; }
  if garage_cli status | grep -q "NO ROLE ASSIGNED"; then
    local node
    node=$(garage_cli node id -q | cut -d@ -f1)
    garage_cli layout assign -z local -c 1G "$node" >/dev/null || return 1
    garage_cli layout apply --version 1 >/dev/null || return 1
  fi
  garage_cli key info "$GARAGE_KEY_ID" >/dev/null 2>&1 \
    || garage_cli key import --yes -n tally-test "$GARAGE_KEY_ID" "$GARAGE_SECRET" >/dev/null || return 1
  garage_cli bucket info "$GARAGE_BUCKET" >/dev/null 2>&1 \
    || garage_cli bucket create "$GARAGE_BUCKET" >/dev/null || return 1
  garage_cli bucket allow --read --write --owner "$GARAGE_BUCKET" --key "$GARAGE_KEY_ID" >/dev/null || return 1

  export AWS_ACCESS_KEY_ID=$GARAGE_KEY_ID
  export AWS_SECRET_ACCESS_KEY=$GARAGE_SECRET
  export AWS_REGION=garage
  export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$GARAGE_S3_PORT
  export TALLY_TEST_S3_BUCKET=$GARAGE_BUCKET
  echo "garage $GARAGE_VERSION serving S3 on $AWS_ENDPOINT_URL_S3, bucket $GARAGE_BUCKET" >&2
}

garage_stop() {
  if [ -f "$GARAGE_HOME/pid" ]; then
    kill "$(cat "$GARAGE_HOME/pid")" 2>/dev/null || true
    rm -f "$GARAGE_HOME/pid"
  fi
}

garage_start
