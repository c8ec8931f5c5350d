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
# 70% size, 128 colours: small enough to commit, still readable
python - <<'PY'
from pathlib import Path
from PIL import Image
for p in Path('docs_preview').glob('*.png'):
    im = Image.open(p).convert('RGB')
    im.resize((im.width * 7 // 10, im.height * 7 // 10), Image.LANCZOS).quantize(colors=128).save(p, optimize=True)
PY
ls -la docs_preview
