#!/usr/bin/env bash
# EMR bootstrap action (after install-tally.sh): starts tally's Ballista cluster for
# `tally run --cluster df://localhost:50050`: the scheduler on the primary node, an executor on
# every core and task node, each a systemd service that restarts when it stops.
#
#   --bootstrap-actions Path=s3://BUCKET/tally/install-tally.sh,Args=[s3://BUCKET/tally/v0.1.0] \
#                       Path=s3://BUCKET/tally/start-cluster.sh,Args=[--slots,8,--memory-limit,24G]
#
# The node's role and the primary node's address come from EMR's instance files
# (/mnt/var/lib/info/instance.json: isMaster; job-flow.json: masterPrivateDnsName). Cluster nodes
# reach each other on every port through EMR's managed security groups; nothing here is opened
# to the outside. The tally on the nodes must be built with `--features distributed`
# (TALLY_FEATURES=distributed bootstrap/build-dist.sh).
#
# Options: --port P (scheduler, default 50050), --executor-port P (default 50051), --slots N
# (default: the node's vCPUs), --memory-limit SIZE (executor memory, default Ballista's share).
# TALLY_EMR_INFO (default /mnt/var/lib/info) and TALLY_SYSTEMD_DIR (default /etc/systemd/system)
# are read so the script can be tried off EMR; TALLY_NO_START=1 writes the unit without starting it.
set -euo pipefail
PORT=50050
EXECUTOR_PORT=50051
SLOTS=""
MEMORY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT=$2; shift 2 ;;
    --executor-port) EXECUTOR_PORT=$2; shift 2 ;;
    --slots) SLOTS=$2; shift 2 ;;
    --memory-limit) MEMORY=$2; shift 2 ;;
    *) echo "start-cluster.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
INFO=${TALLY_EMR_INFO:-/mnt/var/lib/info}
UNITS=${TALLY_SYSTEMD_DIR:-/etc/systemd/system}
TALLY=${TALLY_BIN:-/usr/local/bin/tally}

# `"isMaster": true` in instance.json; the primary's private name in job-flow.json.
if grep -Eq '"isMaster"[[:space:]]*:[[:space:]]*true' "$INFO/instance.json"; then
  ROLE=scheduler
  COMMAND="$TALLY cluster scheduler --bind 0.0.0.0:$PORT"
else
  ROLE=executor
  PRIMARY=$(grep -Eo '"masterPrivateDnsName"[[:space:]]*:[[:space:]]*"[^"]+"' "$INFO/job-flow.json" | sed -E 's/.*"([^"]+)"$/\1/')
  if [ -z "$PRIMARY" ]; then
    echo "start-cluster.sh: no masterPrivateDnsName in $INFO/job-flow.json" >&2
    exit 1
  fi
  COMMAND="$TALLY cluster executor --scheduler $PRIMARY:$PORT --bind 0.0.0.0:$EXECUTOR_PORT --work-dir /mnt/tally-shuffle"
  [ -n "$SLOTS" ] && COMMAND="$COMMAND --slots $SLOTS"
  [ -n "$MEMORY" ] && COMMAND="$COMMAND --memory-limit $MEMORY"
fi

UNIT="$UNITS/tally-$ROLE.service"
TEXT=$(mktemp)
cat > "$TEXT" <<UNIT
[Unit]
Description=tally Ballista $ROLE (tally run --cluster)
After=network-online.target

[Service]
ExecStart=$COMMAND
Restart=always
RestartSec=5
Environment=TALLY_LOG=info

[Install]
WantedBy=multi-user.target
UNIT
# Bootstrap actions run as the hadoop user: the unit folder needs sudo there.
if [ -w "$UNITS" ]; then install -m 0644 "$TEXT" "$UNIT"; else sudo install -m 0644 "$TEXT" "$UNIT"; fi
rm -f "$TEXT"
echo "start-cluster.sh: $ROLE: $COMMAND ($UNIT)"
if [ "${TALLY_NO_START:-0}" != 1 ]; then
  [ "$ROLE" = executor ] && sudo mkdir -p /mnt/tally-shuffle
  sudo systemctl daemon-reload
  sudo systemctl enable --now "tally-$ROLE.service"
fi
