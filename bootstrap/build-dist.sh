#!/usr/bin/env bash
# Builds the EMR artifact: dist/x86_64/tally, linked against glibc 2.26 so it starts on Amazon
# Linux 2 (EMR 6.x) and AL2023 (EMR 7.x), with cargo-zigbuild and zig from PyPI; then checks that
# no symbol needs a newer glibc and writes the sha256 the bootstrap action verifies.
#
#   bootstrap/build-dist.sh            # → dist/x86_64/tally, dist/x86_64/tally.sha256
#   TALLY_FEATURES=distributed bootstrap/build-dist.sh   # with `tally cluster` (Ballista)
#
# dist/aarch64 (Graviton) is built too when the aarch64-unknown-linux-gnu Rust target is
# installed (rustup target add aarch64-unknown-linux-gnu).
set -euo pipefail
cd "$(dirname "$0")/.."
GLIBC=2.26

if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -c "import ziglang" >/dev/null 2>&1; then
  python3 -m pip install --quiet ziglang cargo-zigbuild
fi

# Removes the unwind tables (.eh_frame, its index and the exception tables: 5.3 MB). With
# `panic = "abort"` (Cargo.toml) nothing unwinds through tally's frames: the tables only let a
# backtrace walk the stack, and a stripped binary's backtrace names no function anyway
# (RUST_BACKTRACE=1 prints the same with and without them; the panic hook still records the run
# FAILED). The program header that indexed them becomes PT_NULL, so an unwinder asked for a
# backtrace finds no table rather than reading what now follows the segment. The unstripped
# build in target/ keeps them, for profiling and debugging.
drop_unwind_tables() {
  local bin=$1
  if ! objcopy --remove-section=.eh_frame --remove-section=.eh_frame_hdr \
    --remove-section=.gcc_except_table "$bin" "$bin.nounwind" 2>/dev/null; then
    rm -f "$bin.nounwind"
    echo "$bin: objcopy cannot rewrite it here; unwind tables kept" >&2
    return 0
  fi
  python3 - "$bin.nounwind" <<'PY'
import struct, sys
path = sys.argv[1]
elf = bytearray(open(path, "rb").read())
assert elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[5] == 1, "a 64-bit little-endian ELF"
(phoff,) = struct.unpack_from("<Q", elf, 0x20)
phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
PT_NULL, PT_GNU_EH_FRAME = 0, 0x6474E550
for i in range(phnum):
    at = phoff + i * phentsize
    if struct.unpack_from("<I", elf, at)[0] == PT_GNU_EH_FRAME:
        struct.pack_into("<I", elf, at, PT_NULL)
open(path, "wb").write(elf)
PY
  mv "$bin.nounwind" "$bin"
}

build() {
  local arch=$1 triple=$2
  # Linked as a position-dependent executable (`-no-pie`, on the binary only: the crates keep
  # their usual position-independent code): a PIE carries a relocation for every pointer in its
  # read-only data (DataFusion's and arrow's vtables, 3.9 MB of .rela.dyn) that the loader
  # patches at every start. Libraries, heap and stack are still placed at random; the program's
  # own image is not, which a batch step running the operator's own jobs can afford.
  cargo-zigbuild rustc --release --locked --bin tally --target "$triple.$GLIBC" \
    ${TALLY_FEATURES:+--features "$TALLY_FEATURES"} -- -C link-arg=-no-pie
  mkdir -p "dist/$arch"
  cp "${CARGO_TARGET_DIR:-target}/$triple/release/tally" "dist/$arch/tally"
  # Fully stripped, as every node downloads it: debug line tables are most of the build's
  # 390 MB, the symbol table most of the rest. A panic still names its source file and line.
  if [ "$arch" = "$(uname -m)" ]; then
    strip --strip-all "dist/$arch/tally"
  else
    python3 -m ziglang objcopy --strip-all "dist/$arch/tally" "dist/$arch/tally.stripped" \
      && mv "dist/$arch/tally.stripped" "dist/$arch/tally"
  fi
  drop_unwind_tables "dist/$arch/tally"
  (cd "dist/$arch" && sha256sum tally > tally.sha256)
  local newest
  newest=$(objdump -T "dist/$arch/tally" | grep -o 'GLIBC_[0-9.]*' | sort -u -V | tail -n 1)
  echo "dist/$arch/tally: newest glibc symbol version $newest (limit GLIBC_$GLIBC)"
  if [ "$(printf '%s\n%s\n' "$newest" "GLIBC_$GLIBC" | sort -V | tail -n 1)" != "GLIBC_$GLIBC" ]; then
    echo "dist/$arch/tally needs $newest, newer than GLIBC_$GLIBC" >&2
    exit 1
  fi
}

build x86_64 x86_64-unknown-linux-gnu
if rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$'; then
  build aarch64 aarch64-unknown-linux-gnu
else
  echo "skipping dist/aarch64: the aarch64-unknown-linux-gnu Rust target is not installed" >&2
fi
