# Sourced by the install scripts: `quietly CMD ARGS...` runs CMD with its output
# kept in a temporary file, printed (on stderr) only when CMD fails. apt-get and
# dpkg print dozens of lines even with -qq; a successful install should not.
quietly() {
    local log status=0
    log="$(mktemp)"
    "$@" </dev/null >"$log" 2>&1 || status=$?
    if [ "$status" != "0" ]; then
        echo "error: '$*' failed (exit $status); its output:" >&2
        cat "$log" >&2
    fi
    rm -f "$log"
    return "$status"
}
