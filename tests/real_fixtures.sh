# Shell functions that the tests reading the real fixtures source.

# Sets F to the real fixtures directory, or exits 77 (skipped) when it is not available.
skip_without_real() {
    F=${SYMPHONY_SHARED:-}/fixtures/real
    if [ -z "${SYMPHONY_SHARED:-}" ] || [ ! -d "$F" ]; then
        echo "skipped: SYMPHONY_SHARED with fixtures/real is not available"
        exit 77
    fi
}

# Prints a config's experts: list of the real experts of the given domains (default: all
# four, stories legal code docs), each with its calibration text.
real_experts() {
    [ $# -gt 0 ] || set -- stories legal code docs
    echo "experts:"
    for domain in "$@"; do
        echo "  - source_model: $F/$domain"
        echo "    calibration: [$F/text/$domain/calib.txt]"
    done
}
