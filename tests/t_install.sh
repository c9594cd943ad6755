#!/bin/sh
# make install honours PREFIX and DESTDIR and installs the binary, library, headers, man
# page and a pkg-config file that a program can build against.
set -eu
cd "$SYMPHONY_TOP"
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
build=$(basename "$SYMPHONY_BUILD")
sanitize=0
case "$build" in *asan*) sanitize=1 ;; esac
make --no-print-directory -s install BUILD="$build" SANITIZE=$sanitize PREFIX=/opt/sym DESTDIR="$dest" >/dev/null
for f in bin/symphony-stream lib/libsymphony.a include/symphony/model.h \
         share/man/man1/symphony-stream.1 lib/pkgconfig/symphony.pc; do
    [ -f "$dest/opt/sym/$f" ] || { echo "missing $f after make install"; exit 1; }
done
grep -q '^prefix=/opt/sym$' "$dest/opt/sym/lib/pkgconfig/symphony.pc" ||
    { echo "symphony.pc has the wrong prefix"; exit 1; }
"$dest/opt/sym/bin/symphony-stream" --version | grep -q '^symphony-stream ' ||
    { echo "installed binary does not run"; exit 1; }

# A program builds against the installed library through pkg-config.
cat > "$dest/use.c" <<'C'
#include <symphony/status.h>
#include <stdio.h>
int main(void) { puts(sym_status_str(SYM_ERR_FORMAT)); return 0; }
C
pc="$dest/opt/sym/lib/pkgconfig"
flags=$(PKG_CONFIG_PATH="$pc" PKG_CONFIG_SYSROOT_DIR="$dest" pkg-config --cflags --libs --static symphony)
san=""
case "$build" in *asan*) san="-fsanitize=address,undefined" ;; esac
cc $san -o "$dest/use" "$dest/use.c" $flags
[ "$("$dest/use")" = "malformed input" ] || { echo "linked program printed the wrong text"; exit 1; }
echo "install layout and pkg-config file work"
