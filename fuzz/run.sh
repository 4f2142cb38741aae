#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default 60), outside
# CI. Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   fuzz/run.sh                    # every target, 60 s each
#   FUZZ_SECONDS=300 fuzz/run.sh config_parse dns_request
#   FUZZ_SANITIZER=address fuzz/run.sh   # ASan (slower; the code under test is safe Rust)
#
# Seeds come from fuzz/seeds/<target> and fuzz/regressions/<target>; the growing corpus
# lives in fuzz/corpus/<target> (not committed). A crash is written to
# fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/ and add a unit test in the
# owning crate once it is fixed. Exits non-zero when a target found a crash.
set -euo pipefail

cd "$(dirname "$0")"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
SANITIZER="${FUZZ_SANITIZER:-none}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
ALL=(config_parse tcp_framing session_decode http_head dns_request dns_udp proxy_header)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz"; exit 1; }
rustup run nightly rustc -V >/dev/null 2>&1 || { echo "the nightly toolchain is missing: rustup toolchain install nightly"; exit 1; }

cargo +nightly fuzz build -s "$SANITIZER"

failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  seeds=()
  for d in "seeds/$t" "regressions/$t"; do
    [ -d "$d" ] && seeds+=("$d")
  done
  echo "== $t: ${SECONDS_EACH}s"
  if ! cargo +nightly fuzz run -s "$SANITIZER" "$t" "corpus/$t" "${seeds[@]}" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb="$RSS_MB" -timeout=10 \
      -print_final_stats=1 2>"corpus/$t.log"; then
    failed+=("$t")
    tail -40 "corpus/$t.log"
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|Done [0-9]+ runs" "corpus/$t.log" | sed "s/^/  $t /" || true
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "no crash in: ${TARGETS[*]}"
