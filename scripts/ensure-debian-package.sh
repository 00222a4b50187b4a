#!/usr/bin/env bash
# ensure-debian-package.sh PACKAGE BINARY [BINARY ...]
# Make sure the BINARYs exist, installing Debian's PACKAGE when one is missing. Idempotent and
# quiet: exits 0 at once when every binary is on PATH. Used by `make test` so the tests that
# need a real Prometheus (prometheus, promtool) or a headless browser (chromium) run instead of
# skipping. Needs root (or sudo) to install.
set -euo pipefail

if [ "$#" -lt 2 ]; then
  echo "usage: $0 PACKAGE BINARY [BINARY ...]" >&2
  exit 2
fi
PKG="$1"
shift
BINS=("$@")

have_all() {
  local b
  for b in "${BINS[@]}"; do
    command -v "$b" >/dev/null 2>&1 || return 1
  done
}

if have_all; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-debian-package: apt-get not found; install ${BINS[*]} ($PKG) by hand" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
  else
    echo "ensure-debian-package: not root and no sudo; run: apt-get install -y $PKG" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "ensure-debian-package: installing Debian's $PKG package (${BINS[*]})" >&2
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
# --no-install-recommends keeps it to what the binaries need. Output goes to a log shown only
# on failure (debconf chatters on stderr in containers without apt-utils). The package lists
# are refreshed only when the install fails without a refresh.
if ! { $SUDO apt-get install -y -qq --no-install-recommends "$PKG" ||
       { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "$PKG"; }; } >"$LOG" 2>&1; then
  cat "$LOG" >&2
  echo "ensure-debian-package: apt-get failed (see above)" >&2
  exit 1
fi

# A container without systemd: a package's service was not started, and must not be; the tests
# start their own instances on loopback with temporary configs.
have_all || {
  echo "ensure-debian-package: installed $PKG, but ${BINS[*]} still not all on PATH" >&2
  exit 1
}
