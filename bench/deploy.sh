#!/usr/bin/env bash
# Deploy benchmark (issue 5): a tar.gz of many files served over loopback HTTP.
#
#   corral agent end to end (download, verify, extract, sync), release and rsync strategies
#   vs stretcher's pipeline done with standard tools in the same run:
#   curl to a temp file, sha256sum, tar xzf, rsync -a --delete.
#
# Usage: bench/deploy.sh [SIZE_MB=500] [FILES=20000] [RUNS=3]
# Needs: python3 (data + http.server), curl, sha256sum, tar, gzip, rsync, /usr/bin/time.
# Prints the median wall time of RUNS runs per variant, the ratio baseline/variant and the
# peak RSS (largest process, from /usr/bin/time -v).
set -euo pipefail

SIZE_MB=${1:-500}
FILES=${2:-20000}
RUNS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CORRAL_BIN:-$ROOT/target/release/corral}
if [ ! -x "$BIN" ]; then
    (cd "$ROOT" && cargo build --release --bin corral)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/corral-bench.XXXXXX")
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "# generating $FILES files, $SIZE_MB MB in total (random bytes), as tar.gz" >&2
mkdir -p "$WORK/tree" "$WORK/www"
python3 - "$WORK/tree" "$SIZE_MB" "$FILES" <<'EOF'
import os, sys
root, size_mb, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
each = size_mb * 1024 * 1024 // files
for i in range(files):
    d = os.path.join(root, "d%03d" % (i // 200))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.bin" % i), "wb") as f:
        f.write(os.urandom(each))
EOF
tar -C "$WORK/tree" -cf - . | gzip -1 > "$WORK/www/app.tar.gz"
rm -rf "$WORK/tree"
SUM=$(sha256sum "$WORK/www/app.tar.gz" | cut -d' ' -f1)
ARCHIVE_MB=$(( $(stat -c %s "$WORK/www/app.tar.gz") / 1024 / 1024 ))

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
SERVER_PID=$!
URL="http://127.0.0.1:$PORT/app.tar.gz"
for _ in $(seq 50); do curl -sf -o /dev/null -r 0-0 "$URL" && break; sleep 0.1; done

for strategy in release rsync; do
    cat > "$WORK/www/$strategy.yml" <<EOF
src: $URL
checksum: $SUM
dest: $WORK/dest-$strategy
sync_strategy: $strategy
keep_releases: 1
EOF
done

baseline() {
    local dest=$1 tmp dir
    tmp=$(mktemp -p "$WORK" stretcher.XXXXXX)
    dir=$(mktemp -d -p "$WORK" stretcher_src.XXXXXX)
    curl -sSf -o "$tmp" "$URL"
    echo "$SUM  $tmp" | sha256sum -c --quiet
    tar xzf "$tmp" -C "$dir"
    mkdir -p "$dest"
    rsync -a --delete "$dir/" "$dest/"
    rm -rf "$tmp" "$dir"
}
export -f baseline
export WORK URL SUM

# One measured run: prints "wall_seconds peak_rss_kb".
measure() {
    local tf start end
    tf=$(mktemp -p "$WORK")
    start=$(date +%s.%N)
    /usr/bin/time -v -o "$tf" "$@" >/dev/null 2>"$WORK/last.err" || {
        cat "$WORK/last.err" >&2
        exit 1
    }
    end=$(date +%s.%N)
    echo "$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}') $(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")"
    rm -f "$tf"
}

run_variant() {
    local name=$1
    case $name in
        baseline) measure bash -c "baseline $WORK/dest-baseline" ;;
        corral-release | corral-rsync)
            local s=${name#corral-}
            measure bash -c "echo http://127.0.0.1:$PORT/$s.yml | CORRAL_AGENT_STATE=$WORK/state $BIN agent -rsync-verbose= " ;;
    esac
}

fresh() { rm -rf "$WORK"/dest-* "$WORK"/stretcher* "$WORK/state"; sync; }

declare -A WALLS RSS
VARIANTS="baseline corral-release corral-rsync"
for run in $(seq "$RUNS"); do
    for v in $VARIANTS; do
        fresh
        read -r wall rss < <(run_variant "$v")
        WALLS[$v]="${WALLS[$v]:-} $wall"
        if [ "${RSS[$v]:-0}" -lt "$rss" ]; then RSS[$v]=$rss; fi
        echo "# run $run $v: ${wall}s, peak RSS ${rss} kB" >&2
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
BASE=$(echo "${WALLS[baseline]}" | median)
echo
echo "archive: ${ARCHIVE_MB} MB tar.gz (gzip -1), $FILES files, ${SIZE_MB} MB unpacked; median of $RUNS runs"
printf '%-16s %10s %18s %14s\n' variant wall_s "baseline/variant" peak_rss_MB
for v in $VARIANTS; do
    w=$(echo "${WALLS[$v]}" | median)
    awk -v v="$v" -v w="$w" -v b="$BASE" -v r="${RSS[$v]}" 'BEGIN {printf "%-16s %10.2f %18.2f %14.1f\n", v, w, b / w, r / 1024}'
done
