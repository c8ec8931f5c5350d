#!/usr/bin/env bash
# Screenshots of the rendered docs pages (after tools/build_docs.sh), with Debian's headless Chromium, at a 1280 px window
# (the width tools/check_overflow.py checks). Install it with `apt-get install chromium`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs_preview
shot() {   # page, output name, window height
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update --disable-sync --no-first-run --hide-scrollbars --virtual-time-budget=5000 --window-size=1280,"$3" \
           --screenshot="docs_preview/$2.png" "file://$PWD/docs_html/$1.html" 2>/dev/null
}
shot index index 3200
shot tutorials/lottery_ticket lottery_ticket 3800
shot 03_sparsifier sparsifier 3000
shot tutorials/sparsity_sweep sparsity_sweep 4200
shot tutorials/instability instability 5200
shot tutorials/structured_ticket structured_ticket 3000
shot 00_criteria criteria 2300
shot 02_schedules schedules 3300
shot 04_callback callback 3000
# 70% size, 128 colours: small enough to commit, still readable
python - <<'PY'
from pathlib import Path
from PIL import Image
for p in Path('docs_preview').glob('*.png'):
    im = Image.open(p).convert('RGB')
    im.resize((im.width * 7 // 10, im.height * 7 // 10), Image.LANCZOS).quantize(colors=128).save(p, optimize=True)
PY
ls -la docs_preview
