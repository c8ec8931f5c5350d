#!/usr/bin/env bash
# Screenshots of the rendered docs pages (after tools/build_docs.sh), with Debian's headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs_preview
shot() {   # page, output name, window height
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,"$3" \
           --screenshot="docs_preview/$2.png" "file://$PWD/docs_html/$1.html" 2>/dev/null
}
shot index index 2600
shot tutorials/lottery_ticket lottery_ticket 2600
shot tutorials/sparsity_sweep sparsity_sweep 4200
shot tutorials/instability instability 5200
ls -la docs_preview
