#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds (default 30), two at a time, from the committed
# corpus plus the seeds; see README.md. Stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo fuzz pass
# its -Z sanitizer flags to the stable compiler. FUZZ_BUILD_FLAGS (for example --dev, which CI
# uses to build faster) go to both `cargo fuzz build` and `cargo fuzz run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${1:-30}"
export RUSTC_BOOTSTRAP=1
targets=(wire_agent wire_ingest wire_operator agent_config systemctl_show path_info proxy_header)
read -r -a flags <<<"${FUZZ_BUILD_FLAGS:-}"
cargo fuzz build "${flags[@]}"
status=0
run() {
    local target=$1
    mkdir -p "corpus/$target"
    if ! cargo fuzz run "${flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        >"/tmp/fleetnode-fuzz-$target.log" 2>&1; then
        echo "fuzz: $target FAILED; its log:" >&2
        tail -n 60 "/tmp/fleetnode-fuzz-$target.log" >&2
        return 1
    fi
    echo "fuzz: $target: $(grep -o '#[0-9]*.*DONE.*' "/tmp/fleetnode-fuzz-$target.log" | tail -n 1)"
}
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    pids=()
    for target in "${targets[@]:i:2}"; do
        run "$target" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || status=1
    done
done
exit "$status"
