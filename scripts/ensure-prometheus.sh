#!/usr/bin/env bash
# Make sure the `prometheus` and `promtool` binaries exist (Debian's `prometheus` package ships
# both). Idempotent and quiet: exits 0 at once when both are on PATH. Used by `make test` so the
# Prometheus integration tests run instead of skipping. Needs root (or sudo) to install.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-prometheus: apt-get not found; install Prometheus (prometheus + promtool) by hand" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
  else
    echo "ensure-prometheus: not root and no sudo; run: apt-get install -y prometheus" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "ensure-prometheus: installing Debian's prometheus package (prometheus, promtool)" >&2
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
# --no-install-recommends keeps it to the server and promtool. Output goes to a log shown only
# on failure (debconf chatters on stderr in containers without apt-utils).
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends prometheus; } >"$LOG" 2>&1; then
  cat "$LOG" >&2
  echo "ensure-prometheus: apt-get failed (see above)" >&2
  exit 1
fi

# A container without systemd: the package's service was not started, and must not be; the
# tests start their own instance on loopback with a temporary config.
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || {
  echo "ensure-prometheus: installed, but prometheus/promtool still not on PATH" >&2
  exit 1
}
