"""The local docs preview (see tools/build_docs.sh): nbdev's processed notebooks in _proc/ to HTML pages in docs_html/,
with no prompts, the front matter as the page title, quarto's `echo`/`output` options applied, show_doc entries as
the site shows them, and MathJax served from docs_html/mathjax (installed from the npm registry by build_docs.sh).

The pages are laid out like quarto's at a 1280 px window, so that tools/check_overflow.py measures what a reader sees:
a 697 px body column (quarto's sidebar layout), 17 px text, code at .875em, code cells wrapped as nbs/_quarto.yml
asks (`code-overflow: wrap`), and the site's own nbs/styles.css. Quarto's page can still differ slightly (fonts,
its table and callout styles)."""
import json, re, pathlib, yaml, nbformat
from nbconvert import HTMLExporter
from traitlets.config import Config
allowed = {'code': {'cell_type', 'execution_count', 'id', 'metadata', 'outputs', 'source'},
           'markdown': {'cell_type', 'id', 'metadata', 'source', 'attachments'},
           'raw': {'cell_type', 'id', 'metadata', 'source', 'attachments'}}
QUARTO_LIKE = """
html { font-size: 17px; }
body.jp-Notebook { padding: 1.5em 0 !important; font-size: 17px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Noto Sans", "Liberation Sans", Arial, sans-serif;
  --jp-content-font-size1: 17px; --jp-ui-font-size1: 15px; --jp-code-font-size: 14.875px;
  --jp-code-font-family: SFMono-Regular, Menlo, Monaco, Consolas, "Liberation Mono", "Courier New", monospace; }
main { width: 697px; margin: 0 auto; }
.jp-Cell { padding: 0 !important; margin-bottom: 1rem; }
.jp-InputPrompt, .jp-OutputPrompt, .jp-Collapser { display: none !important; }
.jp-RenderedHTMLCommon { padding-right: 0 !important; font-size: 17px; }
.jp-RenderedHTMLCommon table { font-size: 15px; }
.jp-RenderedHTMLCommon pre, .jp-InputArea-editor pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.jp-InputArea-editor, .jp-OutputArea-output pre, .jp-RenderedHTMLCommon pre { overflow-x: auto; }
.jp-RenderedImage img, .jp-RenderedHTMLCommon img { max-width: 100%; height: auto; }
"""
def opts(src): return dict(re.findall(r'^#\|\s*([\w-]+):\s*(.*?)\s*$', src, re.M))
for p in sorted(pathlib.Path('_proc').rglob('*.ipynb')):
    if '.ipynb_checkpoints' in p.parts: continue
    nb = json.loads(p.read_text())
    cells, title = [], p.stem
    for c in nb['cells']:
        for k in set(c) - allowed.get(c['cell_type'], set(c)): del c[k]      # nbdev's own keys (e.g. `has_sd`) are not in the schema
        c.get('metadata', {}).pop('execution', None)
        src = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
        if c['cell_type'] == 'raw' and src.startswith('---'):               # front matter -> the page's title and summary
            fm = yaml.safe_load(src.strip().strip('-')) or {}
            title = fm.get('title', title)
            cells.append(dict(cell_type='markdown', id='front-matter', metadata={}, source=f"# {title}\n\n*{fm.get('description', '')}*"))
            continue
        if c['cell_type'] == 'code':
            o = opts(src)
            if o.get('echo') == 'false' and o.get('output') == 'asis':           # show_doc: its markdown output, as the site shows it
                for out in c.get('outputs', []):
                    md = out.get('data', {}).get('text/markdown')
                    md = ''.join(md) if isinstance(md, list) else md
                    md = re.sub(r'\{target="_blank"[^}]*\}', '', md)      # quarto's link attributes, which plain markdown shows as text
                    if md: cells.append(dict(cell_type='markdown', id=f"doc-{len(cells)}", metadata={}, source=md))
                continue
            if o.get('output') == 'false': c['outputs'] = []
            c['source'] = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip('\n')
            if o.get('echo') == 'false': c['metadata']['tags'] = ['remove_input']
        cells.append(c)
    nb['cells'] = cells
    nb.setdefault('metadata', {})['title'] = title
    rel = p.relative_to('_proc')
    depth = len(rel.parts) - 1
    cfg = Config()
    cfg.TagRemovePreprocessor.enabled, cfg.TagRemovePreprocessor.remove_input_tags = True, {'remove_input'}
    cfg.HTMLExporter.preprocessors = ['nbconvert.preprocessors.TagRemovePreprocessor']
    exp = HTMLExporter(config=cfg, template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True,
                       mathjax_url='../' * depth + 'mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe')
    html, _ = exp.from_notebook_node(nbformat.reads(json.dumps(nb), as_version=4))   # reads joins list sources
    css = QUARTO_LIKE + pathlib.Path('nbs/styles.css').read_text()
    html = html.replace('</head>', f'<style>{css}</style>\n</head>', 1)
    out = pathlib.Path('docs_html')/rel.with_suffix('.html')
    out.parent.mkdir(parents=True, exist_ok=True); out.write_text(html)
import shutil
for d in pathlib.Path('nbs').rglob('images'):                     # figures the pages link to (nbs/images/*.png)
    if d.is_dir(): shutil.copytree(d, pathlib.Path('docs_html')/d.relative_to('nbs'), dirs_exist_ok=True)
print("docs in docs_html/")
