#!/usr/bin/env bash
# EMR bootstrap action: installs tally on every node from S3 and checks its sha256.
#
#   --bootstrap-actions Path=s3://BUCKET/tally/install-tally.sh,Args=[s3://BUCKET/tally/v0.1.0]
#
# The argument is the S3 prefix holding x86_64/tally and x86_64/tally.sha256 (aarch64/ for
# Graviton instances), as bootstrap/build-dist.sh writes them under dist/.
set -euo pipefail
PREFIX=${1:?usage: install-tally.sh s3://BUCKET/PREFIX}
case "$(uname -m)" in
  x86_64) ARCH=x86_64 ;;
  aarch64) ARCH=aarch64 ;;
  *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
WORK=$(mktemp -d)
aws s3 cp --only-show-errors "$PREFIX/$ARCH/tally" "$WORK/tally"
aws s3 cp --only-show-errors "$PREFIX/$ARCH/tally.sha256" "$WORK/tally.sha256"
(cd "$WORK" && sha256sum --check --status tally.sha256) || { echo "tally: sha256 mismatch, not installing" >&2; exit 1; }
sudo install -m 0755 "$WORK/tally" /usr/local/bin/tally
/usr/local/bin/tally --version
rm -rf "$WORK"
