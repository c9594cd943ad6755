#!/bin/sh
# The man page is in step with --help: every command of the command list has a subsection,
# every option of every command's --help appears in the page, and groff prints no warning.
set -u
man="$SYMPHONY_TOP/man/symphony-stream.1"
fail=0
if command -v groff >/dev/null; then
    warnings=$(groff -man -ww -z "$man" 2>&1)
    [ -z "$warnings" ] || { echo "FAIL: groff warnings: $warnings"; fail=1; }
else
    echo "note: groff is not installed; the page was not checked for warnings"
fi

# The page with roff escapes for '-' removed, so options can be searched as plain text.
plain=$(sed 's/\\-/-/g' "$man")
commands=$("$SYMPHONY_BIN" --help | awk '/^Commands:/ {on = 1; next} on && NF == 0 {on = 0} on {print $1}')
[ -n "$commands" ] || { echo "FAIL: no commands in --help"; exit 1; }
for cmd in $commands; do
    echo "$plain" | grep -q "^\.SS $cmd\$" || { echo "FAIL: no subsection for '$cmd'"; fail=1; }
    opts=$("$SYMPHONY_BIN" "$cmd" --help | grep -oE '(^|[ ,])--[a-z][a-z0-9-]*' |
           sed 's/^[ ,]*//' | sort -u)
    for opt in $opts; do
        echo "$plain" | grep -qe "$opt" || { echo "FAIL: $cmd $opt is not in the man page"; fail=1; }
    done
done
exit $fail
