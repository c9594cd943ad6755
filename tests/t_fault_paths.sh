#!/bin/sh
# Where a merge writes and with which modes: output files and directories get the user's
# umask (checked with 027 and 077); every file the merge creates, renames or deletes is the
# output directory, its OUTPUT.partial sibling or the OUTPUT.lock file (checked with strace
# when it is installed, and by listing the parent directory, which must hold only the
# output after a run, a killed run and its resume, and a --force replacement).
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
BIN=$SYMPHONY_BIN
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-paths-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
experts_per_token: 2
gate_mode: random
experts:
  - source_model: $F/stories
  - source_model: $F/code-permuted
YAML
merge() {
    "$BIN" merge -q --shard-size 512K "$tmp/merge.yml" "$@"
}

# Checks that every entry of dir has the mode that umask leaves of 0666 (files) or 0777
# (directories).
check_modes() {
    dir=$1 mask=$2
    want_file=$(printf '%o' $((0666 & ~0$mask)))
    want_dir=$(printf '%o' $((0777 & ~0$mask)))
    got=$(stat -c '%a' "$dir")
    [ "$got" = "$want_dir" ] || { echo "umask $mask: $dir has mode $got, expected $want_dir"; fail=1; }
    for f in "$dir"/* "$dir"/.[!.]*; do
        [ -e "$f" ] || continue
        got=$(stat -c '%a' "$f")
        [ "$got" = "$want_file" ] ||
            { echo "umask $mask: $(basename "$f") has mode $got, expected $want_file"; fail=1; }
    done
}

for mask in 027 077; do
    out="$tmp/umask-$mask/out"
    mkdir -p "$tmp/umask-$mask"
    (umask $mask && merge "$out") || { echo "umask $mask: merge failed"; fail=1; }
    check_modes "$out" $mask
    # The journal and the shards of an interrupted merge, too.
    out2="$tmp/umask-$mask/killed"
    (umask $mask && SYMPHONY_TEST_KILL_AT=30 merge "$out2" 2>/dev/null)
    [ -d "$out2.partial" ] || { echo "umask $mask: kill left no partial directory"; fail=1; }
    [ -d "$out2.partial" ] && check_modes "$out2.partial" $mask
done

# The parent directory holds only OUTPUT after each kind of run.
parent=$tmp/parent
mkdir "$parent"
only_output() {
    left=$(cd "$parent" && ls -A | tr '\n' ' ')
    [ "$left" = "out " ] || { echo "$1: parent directory holds [$left], expected [out ]"; fail=1; }
}
merge "$parent/out" || fail=1
only_output "fresh merge"
rm -rf "$parent/out"
SYMPHONY_TEST_KILL_AT=60 merge "$parent/out" 2>/dev/null
merge "$parent/out" || fail=1
only_output "killed and resumed merge"
merge --force --seed 3 "$parent/out" || fail=1
only_output "--force replacement"

# strace: every path opened for writing, created, renamed or deleted.
if command -v strace >/dev/null 2>&1 && strace -o /dev/null true 2>/dev/null; then
    rm -rf "$parent/out"
    SYMPHONY_TEST_KILL_AT=60 merge "$parent/out" 2>/dev/null
    # LeakSanitizer cannot run under ptrace, so a sanitizer build runs without it here.
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
        strace -f -y -qq -o "$tmp/trace" -e trace=open,openat,creat,rename,renameat,renameat2,\
unlink,unlinkat,mkdir,mkdirat,rmdir,truncate,link,linkat,symlink,symlinkat,chmod,fchmodat \
        "$BIN" merge -q --shard-size 512K "$tmp/merge.yml" "$parent/out" ||
        { echo "traced resume failed"; fail=1; }
    # Keep calls that change the file system: opens with O_WRONLY, O_RDWR or O_CREAT, and
    # every other traced call. Then list each path argument and each descriptor's path
    # (strace -y), leaving out the working directory that AT_FDCWD stands for.
    grep -v -E '(open|openat)\(' "$tmp/trace" >"$tmp/changes"
    grep -E '(open|openat)\(.*(O_WRONLY|O_RDWR|O_CREAT)' "$tmp/trace" >>"$tmp/changes"
    outside=$(sed 's/AT_FDCWD<[^>]*>//g' "$tmp/changes" | grep -o '"[^"]*"\|<[^>]*>' |
        tr -d '"<>' |
        grep -v -E "^$parent/out(\\.partial|\\.lock|\\.symphony-old)?(/|\$)" |
        grep -v -E '^(out\.partial|\.symphony-journal|[^/]*\.(json|md|safetensors))$' |
        grep -v -E '^(/dev/|pipe:|anon_inode:|socket:)' | sort -u)
    if [ -n "$outside" ]; then
        echo "merge changed paths outside the output: $outside"
        fail=1
    fi
    writes=$(wc -l <"$tmp/changes")
    [ "$writes" -ge 10 ] || { echo "strace saw only $writes changes; the trace is broken"; fail=1; }
    echo "strace: $writes file-system changes, all inside the output"
else
    echo "note: strace is not available or not permitted; checked the parent directory only"
fi
exit $fail
