#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain and python3/pip:
# Debian's headless Chromium for the web page's browser tests (tests/web.rs).
# Models are pulled by the tests themselves; the browser driver
# (playwright-core) by `npm ci` inside the test.
set -euo pipefail
if ! command -v chromium >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends chromium chromium-driver
fi
