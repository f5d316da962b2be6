#!/usr/bin/env bash
# Plugin provenance, end to end in a fresh virtual environment (issue 3's "must show"):
# install cnnkit and the example plugin, list its layers, train a spec using them on tiny generated
# IDX data, uninstall the plugin, and check that loading the bundle fails with one line naming the
# distribution (exit 1, no traceback). The venv does not see the system's site-packages, so numpy,
# pydantic etc. come from PyPI (or pip's cache). Usage: tools/plugin_provenance.sh [workdir]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-$(mktemp -d -t cnnkit-provenance.XXXXXX)}"
PY="${PYTHON:-python3}"
start=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - start ))s)"; }

step "fresh venv in $WORK/venv"
"$PY" -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
"$BIN/pip" install -q --disable-pip-version-check "$ROOT"
"$BIN/pip" install -q --disable-pip-version-check "$ROOT/plugins/cnnkit-extra"
"$BIN/pip" list --disable-pip-version-check 2>/dev/null | grep -i '^cnnkit'

step "cnnkit layers lists the plugin's types with its distribution and version"
"$BIN/cnnkit" layers --json | "$BIN/python" -c '
import json, sys
rows = {r["type"]: r for r in json.load(sys.stdin)}
for t in ("leaky_relu",):
    r = rows[t]
    assert (r["dist"], r["version"]) == ("cnnkit-extra", "0.3.0") and "error" not in r, r
    print("  %s: %s %s (%s)" % (t, r["dist"], r["version"], r["entry_point"]))'

step "tiny generated Fashion-MNIST-shaped IDX files"
"$BIN/python" - "$WORK/data" <<'PYEOF'
import gzip, struct, sys
from pathlib import Path
import numpy as np
folder = Path(sys.argv[1]); folder.mkdir(parents=True, exist_ok=True)
def idx(path, a):
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    path.write_bytes(gzip.compress(head + a.astype(">u1").tobytes(), mtime=0))
rng = np.random.default_rng(0)
for prefix, n in (("train", 512), ("t10k", 128)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):  # class k: a bright square at its own place
        r, c = divmod(int(k), 4); images[i, 7*r:7*r+7, 7*c:7*c+7] = 220
    idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
    idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
PYEOF

step "train specs/fashion_mnist_extra.json (core batchnorm2d, plugin leaky_relu) on it"
"$BIN/cnnkit" run "$ROOT/specs/fashion_mnist_extra.json" --quiet --out "$WORK/extra.cnnkit" \
  --set data.dir="\"$WORK/data\"" --set train.epochs=1 --set train.batch_size=32
"$BIN/cnnkit" evaluate "$WORK/extra.cnnkit" --data-dir "$WORK/data"

step "uninstall the plugin; loading the bundle must fail with the named-distribution error"
"$BIN/pip" uninstall -q -y cnnkit-extra
set +e
"$BIN/cnnkit" evaluate "$WORK/extra.cnnkit" --data-dir "$WORK/data" >"$WORK/out.txt" 2>"$WORK/err.txt"
code=$?
set -e
cat "$WORK/err.txt"
expected="error: $WORK/extra.cnnkit: layer type 'leaky_relu' comes from cnnkit-extra 0.3.0, which is not installed: pip install cnnkit-extra"
if [ "$code" -ne 1 ] || [ "$(cat "$WORK/err.txt")" != "$expected" ] || [ -s "$WORK/out.txt" ]; then
  echo "FAILED: exit $code; expected exit 1 and exactly: $expected" >&2
  exit 1
fi
step "ok: provenance works end to end"
