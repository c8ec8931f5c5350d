"""Fail on anything in the docs wider than its column, as a reader sees the site at a 1280 px window.

The pages are the local preview (tools/preview_html.py, from nbdev's processed notebooks in _proc/), laid out like
quarto's: a 697 px body column (quarto's sidebar layout at 1280 px), 17 px text, code at .875em, code cells wrapped
(`code-overflow: wrap` in nbs/_quarto.yml). Headless Chromium loads every page, one after the other, in a frame
1280 px wide, and this script reports, by page and section:

- an output line longer than the column (measured unwrapped, as a table or a verdict printed to stdout would need);
- a table, code block, formula or paragraph wider than the column, or one that scrolls sideways;
- a figure shrunk so far that its text is unreadable: a matplotlib figure is legible in the column when it is at most
  about 9.5 inches wide (a 10-pt label then shows at 10 px or more); wider multi-panel figures should be stacked.

Entries in tools/docs_pending.txt (`overflow PAGE`) are reported but do not fail: pages being fixed elsewhere.

    python tools/check_overflow.py            # the preview from _proc/ (run nbdev's processing first), then the check
    python tools/check_overflow.py --proc     # nbdev's processing too (what tools/build_docs.sh does; about 40 s)
    python tools/check_overflow.py --no-build # check docs_html/ as it is

Without Chromium (`apt-get install chromium`) it says so and exits 0; CI (.ci/run) installs it.
"""
import argparse, http.server, json, os, shutil, signal, subprocess, sys, threading, time
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root/'tools'))
from pending import pending, is_pending

COLUMN_PX, WINDOW_PX, MIN_PX_PER_INCH = 697, 1280, 72

MEASURE = r"""
function measure(d, colPx, minPxPerInch) {
  const main = d.querySelector('main') || d.body, col = main.getBoundingClientRect();
  const L = col.left, R = col.right, W = Math.round(R - L);
  // outputs are measured unwrapped: a line of a printed table or verdict must fit as it is
  for (const pre of d.querySelectorAll('.jp-OutputArea-output pre')) { pre.style.whiteSpace = 'pre'; pre.style.overflowWrap = 'normal'; }
  const heads = [...d.querySelectorAll('h1, h2, h3, h4')];
  const section = el => { let s = ''; for (const h of heads) { if (h.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING) s = h.textContent.replace(/¶/g, '').trim(); else break; } return s; };
  const kind = el => {
    if (el.tagName === 'IMG') return 'figure';
    if (el.closest('.jp-CodeCell .jp-InputArea')) return 'code';
    if (el.closest('.jp-OutputArea-output')) return el.tagName === 'TABLE' || el.querySelector('table') ? 'output table' : 'output';
    const cell = el.closest('.jp-Cell');
    const doc = cell && cell.querySelector('h3, h4') && cell.querySelector('h3, h4').textContent && cell.querySelector('pre') && cell.innerText.startsWith('source');
    if (el.tagName === 'TABLE') return doc ? 'doc entry table' : 'table';
    if (el.tagName === 'PRE' || el.classList.contains('highlight')) return doc ? 'doc entry signature' : 'code block';
    if (el.classList.contains('MathJax_Display') || el.classList.contains('MathJax')) return 'formula';
    return 'text';
  };
  const dpi = img => {
    const s = img.getAttribute('src') || '';
    if (!s.startsWith('data:image/png;base64,')) return null;
    const b = atob(s.slice(22, 22 + 4096)), i = b.indexOf('pHYs');
    if (i < 0 || b.charCodeAt(i + 12) !== 1) return null;
    const ppm = ((b.charCodeAt(i + 4) << 24) | (b.charCodeAt(i + 5) << 16) | (b.charCodeAt(i + 6) << 8) | b.charCodeAt(i + 7)) >>> 0;
    return ppm * 0.0254;
  };
  const why = el => {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return null;
    if (el.tagName === 'IMG') {
      const d_ = dpi(el) || 100, inches = el.naturalWidth / d_, pxPerInch = r.width / inches;
      if (pxPerInch < minPxPerInch) return `a figure ${inches.toFixed(1)} in wide shown ${Math.round(r.width)} px wide: its 10-pt text shows at ${(10 * pxPerInch / 72).toFixed(1)} px; make it at most ${(r.width / minPxPerInch).toFixed(1)} in wide, or stack its panels`;
      if (r.right > R + 1) return `${Math.round(r.width)} px wide in a ${W} px column`;
      return null;
    }
    if (r.right > R + 1 || r.left < L - 1) return `${Math.round(r.width)} px wide in a ${W} px column`;
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).display !== 'inline') return `its content is ${el.scrollWidth} px wide in ${el.clientWidth} px: it scrolls sideways`;
    return null;
  };
  const sel = ['.jp-RenderedMarkdown > *', '.jp-RenderedMarkdown li', '.jp-RenderedMarkdown pre',
               '.jp-RenderedMarkdown table', '.jp-InputArea-editor', '.jp-InputArea-editor pre', '.jp-OutputArea-output',
               '.jp-OutputArea-output pre', '.jp-OutputArea-output table', '.jp-OutputArea-output img', '.jp-RenderedMarkdown img',
               '.MathJax_Display', '.jp-OutputArea-output .jp-RenderedHTMLCommon > *'].join(', ');
  const bad = [];
  for (const el of d.querySelectorAll(sel)) { const w = why(el); if (w) bad.push({el, w}); }
  // report the innermost element of each overflow: the table, not the output that holds it
  const inner = bad.filter(b => !bad.some(o => o !== b && b.el.contains(o.el)));
  return {column: W, problems: inner.map(b => ({kind: kind(b.el), why: b.w, section: section(b.el),
          text: (b.el.tagName === 'IMG' ? (b.el.getAttribute('alt') || '') : b.el.textContent).replace(/\s+/g, ' ').trim().slice(0, 90)}))};
}
"""

DRIVER = """<!doctype html><html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe id="f" style="width:%(window)dpx;height:1000px;border:0"></iframe>
<script>
%(measure)s
const pages = %(pages)s, out = {};
const f = document.getElementById('f');
function next(i) {
  if (i >= pages.length) { fetch('/__report__', {method: 'POST', body: JSON.stringify(out)}); return; }
  const page = pages[i];
  const timer = setTimeout(() => { out[page] = {error: 'did not load in 60 s'}; next(i + 1); }, 60000);
  f.onload = () => {
    const w = f.contentWindow;
    const done = () => { clearTimeout(timer); try { out[page] = measure(f.contentDocument, %(column)d, %(ppi)d); } catch (e) { out[page] = {error: String(e)}; } next(i + 1); };
    if (w.MathJax && w.MathJax.Hub) w.MathJax.Hub.Queue(() => setTimeout(done, 50)); else setTimeout(done, 50);
  };
  f.src = page;
}
next(0);
</script></body></html>"""

def chromium():
    return next((p for p in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(p)), None)

def build(proc:bool):
    if proc: subprocess.run([sys.executable, '-c', 'from nbdev.serve import proc_nbs; proc_nbs(force=True)'], cwd=root, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, 'tools/preview_html.py'], cwd=root, check=True, stdout=subprocess.DEVNULL)
    mj, dst = root/'.docs_tools/node_modules/mathjax', root/'docs_html/mathjax'
    if mj.exists() and not dst.exists(): shutil.copytree(mj, dst)

def run_check(site:Path, browser:str, timeout:float=300)->dict:
    pages = sorted(str(p.relative_to(site)) for p in site.rglob('*.html') if 'mathjax' not in p.parts)
    driver = DRIVER % dict(window=WINDOW_PX, measure=MEASURE, pages=json.dumps(pages), column=COLUMN_PX, ppi=MIN_PX_PER_INCH)
    got, report = threading.Event(), {}
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k): super().__init__(*a, directory=str(site), **k)
        def log_message(self, *a): pass
        def do_GET(self):
            if self.path.startswith('/__driver__'):
                b = driver.encode(); self.send_response(200); self.send_header('Content-Type', 'text/html'); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
            else: super().do_GET()
        def do_POST(self):
            report.update(json.loads(self.rfile.read(int(self.headers['Content-Length']))))
            self.send_response(204); self.end_headers(); got.set()
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    args = [browser, '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
            '--disable-sync', '--no-first-run', '--hide-scrollbars', f'--window-size={WINDOW_PX + 20},1100',
            f'--user-data-dir={root}/.docs_tools/chromium-profile', f'http://127.0.0.1:{srv.server_port}/__driver__.html']
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if not got.wait(timeout): sys.exit(f"the overflow check got no report from Chromium in {timeout:.0f} s")
    finally:
        try: os.killpg(proc.pid, signal.SIGTERM)      # the browser this script started, and its helper processes
        except ProcessLookupError: pass
        proc.wait(); srv.shutdown()
    return report

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--proc', action='store_true', help="run nbdev's processing of the notebooks first")
    ap.add_argument('--no-build', action='store_true', help='check docs_html/ as it is')
    ap.add_argument('--verbose', action='store_true', help='list the problems of pending pages too')
    a = ap.parse_args()
    browser = chromium()
    if not browser:
        print("SKIP: the overflow check needs Chromium (apt-get install chromium), which this machine lacks; CI runs it"); sys.exit(0)
    start = time.time()
    if not a.no_build: build(a.proc)
    report = run_check(root/'docs_html', browser)
    allowed, fails, pend = pending('overflow'), 0, []
    for page, r in sorted(report.items()):
        name = page.removesuffix('.html')
        if 'error' in r: print(f"FAIL {name}: {r['error']}"); fails += 1; continue
        if not r['problems']: continue
        if is_pending(name, allowed):
            pend.append(f"{name} ({len(r['problems'])})")
            if not a.verbose: continue
        else: fails += 1
        print(f"{'PENDING' if is_pending(name, allowed) else 'FAIL'} {name}: {len(r['problems'])} element(s) wider than the {r['column']} px column")
        for p in r['problems']:
            print(f"  [{p['section'][:50]}] {p['kind']}: {p['why']}\n      {p['text']!r}")
    stale = sorted(a for a in allowed if not any(is_pending(p.removesuffix('.html'), {a}) for p, r in report.items() if r.get('problems')))
    if stale: print(f"note: tools/docs_pending.txt lists pages that no longer overflow (remove them): {', '.join(stale)}")
    if pend: print(f"pending (tools/docs_pending.txt), not failing: {', '.join(pend)}")
    print(f"{len(report)} pages checked at {WINDOW_PX} px in {time.time() - start:.0f} s: "
          + (f"{fails} page(s) overflow" if fails else "nothing wider than its column"))
    sys.exit(1 if fails else 0)
