#!/usr/bin/env bash
# The project's test command (the README's second command; .ci/run calls it).
# 0. Formatting and lints.
# 1. Unit, property and behaviour tests of every crate (the model's
#    invariant checker runs after every operation in these builds).
# 2. The scenario corpus on both backends: the model and the live kernel.
# 3. A bounded random differential run, model against kernel. Random knobs
#    set THP sizes to `always`, which lets every other process on the host
#    fault THPs and move the system-wide counters, so this run compares those
#    counters with --noisy-host (Linux must reach the model's events); pages,
#    folios, smaps, VmPTE and errnos stay exact. The corpus is exact.
# 4. The out-of-memory paths on the model alone (`thpsim fuzz`): random
#    scenarios on 2-64 MiB machines with allocation failures injected, on a
#    release build that checks every invariant after every operation. It
#    has its own target directory, so that the two release builds do not
#    rebuild each other. It needs no root and runs first; its verdict is
#    the script's last word, so the kernel steps run even when it fails.
# Needs root for steps 2 and 3 (the Linux backend says so clearly if not).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
cargo build --release -p thpsim
cargo build --release -p thpsim --features check-invariants --target-dir target/check-invariants
fuzz_status=0
./target/check-invariants/release/thpsim fuzz --count "${THPSIM_FUZZ:-2000}" --seed "${THPSIM_SEED:-1}" \
    --out target/fuzz-failures || fuzz_status=$?
./target/release/thpsim oracle --retries 2 scenarios/
./target/release/thpsim oracle --retries 2 --noisy-host --random "${THPSIM_RANDOM:-300}" --seed "${THPSIM_SEED:-1}" --out target/oracle-failures
exit "$fuzz_status"
