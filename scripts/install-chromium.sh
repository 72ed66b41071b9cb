#!/bin/sh
# Install Debian's headless-capable Chromium for the analytics screenshot test
# (tests/linkclicks/test_analytics_browser.py). Idempotent; needs root or passwordless sudo.
set -eu

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install-chromium: need root (or passwordless sudo) to apt-get install chromium" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# A stale package list makes the install fail with 404s; refresh it once if so.
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1 || {
    $SUDO apt-get update -qq
    $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
}
command -v chromium >/dev/null 2>&1
