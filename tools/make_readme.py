"""Write README.md from nbs/index.ipynb, as GitHub and PyPI render it: plain markdown, no front matter.

Markdown cells are copied, with links to notebooks pointed into the repository (`nbs/...ipynb`, which GitHub
renders). Code cells follow their quarto directives: `#| hide` drops the cell, `#| echo: false` keeps only its
outputs, `#| output: false` keeps only its code. Outputs must be markdown (`IPython.display.Markdown`) or text:
anything else (HTML, images) stops the script with a message, since PyPI would show it raw or not at all.

    python tools/make_readme.py           # write README.md
    python tools/make_readme.py --check   # exit 1 if README.md is not what index.ipynb gives
"""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def directives(src:str)->dict:
    return {m.group(1): m.group(2).strip() for m in re.finditer(r'^#\|\s*([\w-]+):?[ \t]*(.*)$', src, re.M)}

def repo_links(md:str)->str:
    "Relative links to notebooks and images (`nbs/images/`), as the docs site has them, made relative to the repository root"
    return re.sub(r'\]\((?![a-z]+:|#|/)([^)\s#]+\.(?:ipynb|png|svg|jpg)(?:#[^)\s]*)?)\)', r'](nbs/\1)', md)

def readme(nb:dict)->str:
    parts = []
    for i, c in enumerate(nb['cells']):
        src = ''.join(c['source'])
        if i == 0: src = re.sub(r'^- [\w-]+: .*$\n?', '', src, flags=re.M)      # nbdev front matter ("- skip_showdoc: true")
        if c['cell_type'] == 'markdown': parts.append(repo_links(src)); continue
        if c['cell_type'] != 'code': continue
        d = directives(src)
        if 'hide' in d or d.get('include') == 'false': continue
        code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
        if d.get('echo') != 'false' and code: parts.append(f"```python\n{code}\n```")
        if d.get('output') == 'false': continue
        for o in c.get('outputs', []):
            data = o.get('data', {})
            if o['output_type'] == 'stream' and o.get('name') == 'stderr':
                sys.exit(f"nbs/index.ipynb holds an output on stderr (a warning?): {''.join(o['text'])[:200]!r}")
            if o['output_type'] == 'stream': parts.append("```\n" + ''.join(o['text']).rstrip() + "\n```")
            elif 'text/markdown' in data: parts.append(repo_links(''.join(data['text/markdown']).strip()))
            elif o['output_type'] == 'error': sys.exit(f"nbs/index.ipynb holds an error output: {o.get('ename')}")
            elif set(data) - {'text/plain'}:
                sys.exit(f"nbs/index.ipynb: an output of type {sorted(data)} cannot go into the README; "
                         "return IPython.display.Markdown, or mark the cell `#| output: false`")
            elif 'text/plain' in data: parts.append("```\n" + ''.join(data['text/plain']).rstrip() + "\n```")
    return '\n\n'.join(p.strip('\n') for p in parts if p.strip()) + '\n'

if __name__ == '__main__':
    text = readme(json.loads((root/'nbs'/'index.ipynb').read_text()))
    if '--check' in sys.argv:
        if (root/'README.md').read_text() != text:
            sys.exit("README.md is not what nbs/index.ipynb gives: run `python tools/make_readme.py`")
        print("README.md matches nbs/index.ipynb")
    else: (root/'README.md').write_text(text); print("README.md written from nbs/index.ipynb")
