"""Vendor onnxruntime-web's WebAssembly build into the dashboard's static folder (``make vendor``).

The dashboard's "try it" panel runs a model in the browser with onnxruntime-web, served by the
platform itself (no CDN: the dashboard works offline). This fetches the pinned package from the npm
registry (``npm pack``), checks it against the registry's integrity hash recorded here, and copies the
three files the WebAssembly backend needs into ``src/forgeml/server/static/vendor/onnxruntime-web/``
(git-ignored):

- ``ort.wasm.min.mjs``: the ES module the page imports (the API: ``InferenceSession``, ``Tensor``, ``env``);
- ``ort-wasm-simd-threaded.mjs`` and ``ort-wasm-simd-threaded.wasm``: the runtime it loads from
  ``env.wasm.wasmPaths`` (one build serves single- and multi-threaded use).

onnxruntime-web is MIT-licensed (its ``package.json``, copied along). ``VERSION`` is written last, so its presence (the Makefile's stamp)
means the folder is complete. Re-running with the files in place and the same version does nothing.

    python3 tools/vendor_onnxruntime_web.py [--dest DIR] [--tarball onnxruntime-web-X.tgz]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from npm_package import check_integrity, fetch_tarball  # tools/ is on sys.path when run as a script

VERSION = "1.31.1"
PACKAGE = f"onnxruntime-web@{VERSION}"
# `npm view onnxruntime-web@1.31.1 dist.integrity`
INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
FILES = (
    "dist/ort.wasm.min.mjs",
    "dist/ort-wasm-simd-threaded.mjs",
    "dist/ort-wasm-simd-threaded.wasm",
    "package.json",
)
ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "src" / "forgeml" / "server" / "static" / "vendor" / "onnxruntime-web"


def installed(dest: Path) -> bool:
    stamp = dest / "VERSION"
    present = all((dest / Path(name).name).is_file() for name in FILES)
    return present and stamp.is_file() and stamp.read_text().strip() == VERSION


def extract(tar_bytes: bytes, dest: Path) -> None:
    """The wanted files of the tarball into ``dest`` (replaced whole), then ``VERSION``."""
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:gz") as tar:
        for name in FILES:
            try:
                member = tar.extractfile(f"package/{name}")
            except KeyError:
                member = None
            if member is None:
                sys.exit(f"package/{name} is missing from the {PACKAGE} tarball")
            (staging / Path(name).name).write_bytes(member.read())
    (staging / "VERSION").write_text(VERSION + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dest", type=Path, default=DEST, help=f"where the files go (default {DEST.relative_to(ROOT)})"
    )
    parser.add_argument("--tarball", type=Path, default=None, help="use this onnxruntime-web tarball, not the registry")
    parser.add_argument("--force", action="store_true", help="fetch and copy even when the version is in place")
    args = parser.parse_args(argv)
    if installed(args.dest) and not args.force:
        print(f"{PACKAGE} is already in {args.dest}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or fetch_tarball(PACKAGE, Path(tmp))
        tar_bytes = tarball.read_bytes()
    check_integrity(tar_bytes, PACKAGE, INTEGRITY)
    extract(tar_bytes, args.dest)
    print(f"{PACKAGE}: {', '.join(Path(n).name for n in FILES)} -> {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
