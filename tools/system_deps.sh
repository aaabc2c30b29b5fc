#!/usr/bin/env bash
# The system packages the tests drive (Debian's names): chromium (the dashboard's browser tests), postgresql
# (the server's database tests), curl (the seed's curl calls against a live server) and npm (`make vendor`
# fetches onnxruntime-web). `make test` runs this first. It does nothing when all are present; otherwise it
# installs the missing ones with apt-get when it can (as root, or with passwordless sudo), and else prints
# the command to run. It never fails `make test`: a test whose program is still missing skips, naming the
# same command (under .ci/run, which sets FORGEML_REQUIRE_SYSTEM_DEPS=1, it fails instead).
set -uo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

command="sudo apt-get install -y ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "make test: missing system packages: ${missing[*]} (no apt-get here: install them with your package" \
        "manager); the tests that need them skip" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "make test: missing system packages: ${missing[*]}; the tests that need them skip. Install them with:" >&2
    echo "    $command" >&2
    exit 0
fi
echo "make test: installing ${missing[*]} with apt-get"
if ! { "${sudo[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    echo "make test: apt-get could not install ${missing[*]}; the tests that need them skip. Run:" >&2
    echo "    $command" >&2
fi
exit 0
