"""Documentation: every public name carries a Google-style docstring (STYLE.md,
"Docstrings and comments"), the docstring examples run as doctests, the API pages
render every export, the README's links resolve, and every python block of the README
and of the documentation site's pages (docs/) runs (their promises are code). With the
docs extra installed (``make test`` installs it), the site is built as ``make docs``
builds it and the rendered API pages are read: examples as code blocks, lists as
lists, the Readout's main API first, cross-references as links.

Public: each name of ``__all__`` (``SpaceAdapter`` and ``CompositeActionDistribution``,
exported lazily, included where their optional dependency is installed) and, for
classes, every method and property not starting with ``_`` that is defined in this
package (inherited torch / tensordict / tuple members are not ours to document). A
constructor is documented by its class docstring's ``Args:``.
"""

import doctest
import html
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import subprocess
import sys

import pytest
from helpers import README

import discrete_continuous_embed_readout as package
from discrete_continuous_embed_readout import CONTINUOUS_DISTRIBUTIONS

PACKAGE = package.__name__

ENTRY_HEAD = re.compile(r'^\s*(\*{0,2}\w+(\s*,\s*\*{0,2}\w+)*)(\s*\([^)]*\))?\s*:(\s|$)')


# docstrings of the public API


def public_objects():
    """``(qualified name, object, kind)`` for every public function, class, method and property."""
    for name in package.__all__:
        optional = {'SpaceAdapter': 'gymnasium', 'CompositeActionDistribution': 'tensordict'}.get(name)
        if optional and importlib.util.find_spec(optional) is None:
            continue  # optional dependency: documented where it is installed
        obj = getattr(package, name)
        if inspect.isclass(obj):
            yield name, obj, 'class'
            yield from _members(name, obj)
        elif callable(obj):
            yield name, obj, 'function'


def _members(class_name: str, cls):
    for attr in dir(cls):
        if attr.startswith('_'):
            continue
        owner = next((k for k in cls.__mro__ if attr in vars(k)), None)
        if owner is None or not owner.__module__.startswith(PACKAGE):
            continue  # inherited from torch / tuple / object
        raw = vars(owner)[attr]
        qualname = f'{class_name}.{attr}'
        if isinstance(raw, property):
            yield qualname, raw, 'property'
        elif isinstance(raw, (staticmethod, classmethod)):
            yield qualname, raw.__func__, 'method'
        elif inspect.isfunction(raw):
            yield qualname, raw, 'method'


def own_doc(obj) -> str | None:
    """The object's own docstring (not one inherited through ``inspect.getdoc``)."""
    doc = obj.fget.__doc__ if isinstance(obj, property) else obj.__doc__
    return inspect.cleandoc(doc) if doc and doc.strip() else None


def section(doc: str, title: str) -> list[str] | None:
    """The lines of a Google-style section (dedented), or None when there is none."""
    lines = doc.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == f'{title}:' and not line.startswith(' ')]
    if not starts:
        return None
    body = []
    for line in lines[starts[0] + 1 :]:
        if line.strip() and not line.startswith(' '):
            break  # the next section title (or unindented prose)
        body.append(line)
    return body


def documented_names(args_lines: list[str]) -> set[str]:
    """Parameter names of an ``Args:`` section: entries ``name:``, grouped
    ``a, b:`` (which may wrap onto the next lines), stars optional."""
    nonblank = [line for line in args_lines if line.strip()]
    if not nonblank:
        return set()
    indent = min(len(line) - len(line.lstrip()) for line in nonblank)
    entries, current = [], []
    for line in nonblank:
        if len(line) - len(line.lstrip()) == indent and current:
            entries.append(' '.join(current))
            current = []
        current.append(line.strip())
    entries.append(' '.join(current))
    names = set()
    for entry in entries:
        head = ENTRY_HEAD.match(entry)
        if head:
            names.update(n.strip().lstrip('*') for n in head.group(1).split(','))
    return names


def parameters(obj) -> list[str]:
    """Parameter names (``*args`` as ``args``), ``self`` / ``cls`` left out."""
    params = list(inspect.signature(obj).parameters.values())
    if params and params[0].name in ('self', 'cls'):
        params = params[1:]
    return [p.name for p in params]


def init_of(cls):
    """The class's ``__init__`` if this package defines one (else None)."""
    owner = next((k for k in cls.__mro__ if '__init__' in vars(k)), None)
    if owner is None or not owner.__module__.startswith(PACKAGE):
        return None
    return vars(owner)['__init__']


def returns_nothing(obj) -> bool:
    annotation = inspect.signature(obj).return_annotation
    return annotation in (None, 'None')


def _deduplicated(objects):
    # a method inherited by several exports (Readout's by ParameterlessReadout) is
    # checked once, under the export nearest to the class that defines it
    chosen = {}
    for name, obj, kind in objects:
        depth = len(getattr(package, name.split('.')[0]).__mro__) if kind in ('method', 'property') else 0
        key = (id(obj), kind)
        if key not in chosen or depth < chosen[key][0]:
            chosen[key] = (depth, (name, obj, kind))
    return sorted((entry for _, entry in chosen.values()), key=lambda entry: entry[0])


OBJECTS = _deduplicated(public_objects())


def test_the_walk_finds_the_api():
    names = {name for name, _, _ in public_objects()}
    assert {
        'Readout',
        'Readout.sample',
        'Readout.num_rows',
        'Embed.forward',
        'ContinuousDistribution.kl_div',
        'MultiCategorical.log_prob',
        'MultiCategoricalDistribution.logits',
        'get_validate_args',
    } <= names
    assert 'Readout.train' not in names  # torch's, not ours


def test_every_public_object_has_a_docstring():
    missing = [name for name, obj, _ in OBJECTS if own_doc(obj) is None]
    assert not missing, f'public objects without a docstring: {missing}'


def test_args_sections_document_every_parameter():
    offenders = []
    for name, obj, kind in OBJECTS:
        doc = own_doc(obj)
        if doc is None or kind == 'property':
            continue
        if kind == 'class':
            if hasattr(obj, '_fields'):  # named tuple: its fields are its arguments
                missing = [f for f in obj._fields if f not in doc]
                offenders += [f'{name}: field {f!r} not described' for f in missing]
                continue
            init = init_of(obj)
            if init is None:
                continue
            params, where = parameters(init), f'{name} (class docstring, for __init__)'
        else:
            params, where = parameters(obj), name
        if not params:
            continue
        args = section(doc, 'Args')
        if args is None:
            offenders.append(f'{where}: no Args: section (parameters {params})')
            continue
        documented = documented_names(args)
        undocumented = [p for p in params if p not in documented]
        unknown = sorted(documented - set(params))
        if undocumented:
            offenders.append(f'{where}: Args: does not document {undocumented}')
        if unknown:
            offenders.append(f'{where}: Args: documents {unknown}, which are not parameters')
    assert not offenders, 'incomplete Args: sections:\n' + '\n'.join(offenders)


def test_functions_and_methods_document_what_they_return():
    offenders = [
        name
        for name, obj, kind in OBJECTS
        if kind in ('function', 'method') and own_doc(obj) and not returns_nothing(obj) and section(own_doc(obj), 'Returns') is None
    ]
    assert not offenders, f'no Returns: section: {offenders}'


def test_the_api_pages_render_every_export():
    # the documentation site (mkdocs) renders an object where a page says ::: its.path
    rendered = set(re.findall(r'^::: ([\w.]+)', '\n'.join(p.read_text() for p in (DOCS / 'api').glob('*.md')), re.M))
    missing = [name for name in package.__all__ if not any(path.split('.')[-1] == name for path in rendered)]
    assert not missing, f'no page in docs/api renders {missing}'


def test_the_package_sends_readers_to_the_guide_not_the_readme():
    # the README is one screen of introduction; what docstrings refer to is in docs/guide/
    # (a link there is checked by the strict site build)
    offenders = [
        f'{path.name}:{number}'
        for path in sorted(README.parent.joinpath(PACKAGE).rglob('*.py'))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if 'README' in line
    ]
    assert not offenders, f'mentions of the README (point at docs/guide/ instead): {offenders}'


def test_the_readmes_links_to_files_of_the_repository_exist():
    # the README is one screen of introduction; the guide pages and the API pages (rendering
    # every export, above) hold the rest, so its links to them must not break
    links = re.findall(r'\]\(([^)#:]+)(?:#[^)]*)?\)', README.read_text())
    assert len(links) >= 8, links
    missing = [link for link in links if not (README.parent / link).exists()]
    assert not missing, f'README.md links to missing files {missing}'


@pytest.mark.parametrize(
    'doc, names',
    [
        (
            'Args:\n    a: one.\n    b, c: two,\n        wrapped.\n    *args, **kwargs: rest.\n\nReturns:\n    x: not an arg.',
            {'a', 'b', 'c', 'args', 'kwargs'},
        ),
        ('Args:\n    first, second,\n        third: grouped over two lines.\n    x (int): typed.', {'first', 'second', 'third', 'x'}),
    ],
)
def test_args_parsing(doc, names):
    assert documented_names(section(doc, 'Args')) == names


NEEDS = {'rl.composite': 'tensordict', **{f'fused.{m}': 'triton' for m in ('triton_kernels', 'triton_launch', 'kernel_ops')}}  # modules of an optional dependency
MODULES = [
    importlib.import_module(m.name)
    for m in pkgutil.walk_packages(package.__path__, prefix=f'{package.__name__}.')
    if (short := m.name.removeprefix(f'{package.__name__}.')) not in NEEDS or importlib.util.find_spec(NEEDS[short]) is not None
]


@pytest.mark.parametrize('module', MODULES, ids=lambda m: m.__name__.removeprefix(f'{package.__name__}.'))
def test_docstring_examples_run(module):
    """The ``Examples:`` sections are doctests: they run and print what they show."""
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_examples_sections_are_titled_as_griffe_reads_them():
    # griffe (the API pages) parses ``Examples:`` into code blocks; any other title
    # ("Example:") becomes an admonition whose ``>>>`` lines render as nested quotes
    # with the output run into them
    offenders = [name for name, obj, _ in OBJECTS if own_doc(obj) and '>>>' in own_doc(obj) and section(own_doc(obj), 'Examples') is None]
    assert not offenders, f'doctest lines outside an Examples: section: {offenders}'


# the rendered API pages: built with mkdocs (the docs extra, which `make test` installs)
# and read as HTML, for what only the rendering shows

SITE_PACKAGES = ('mkdocs', 'material', 'mkdocstrings', 'mkdocstrings_handlers.python')
PRE = re.compile(r'<pre[^>]*>(.*?)</pre>', re.S)
H3_ID = re.compile(r'<h3 id="discrete_continuous_embed_readout\.Readout\.(\w+)"')


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r'<[^>]+>', '', fragment))


def _missing_site_packages() -> list[str]:
    missing = []
    for name in SITE_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    """The documentation site, built as ``make docs`` builds it (strict) into a temporary folder."""
    missing = _missing_site_packages()
    if missing:
        pytest.skip(f'the docs extra is not installed (missing {missing}): pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp('site')
    build = subprocess.run(
        [sys.executable, '-m', 'mkdocs', 'build', '--strict', '--quiet', '--site-dir', str(out)],
        cwd=README.parent, env={**os.environ, 'NO_MKDOCS_2_WARNING': '1'}, capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, f'mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}'
    return out


def doctest_text(doc: str) -> str:
    """A docstring's example: its lines from the first ``>>>`` to the next blank line, stripped."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith('>>>'))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return '\n'.join(line.strip() for line in lines[start:end])


def api_page(site, name: str) -> str:
    return (site / 'api' / name / 'index.html').read_text()


def test_the_api_pages_render_docstring_examples_as_code_blocks(site):
    pages = [p.read_text() for p in sorted((site / 'api').glob('*/index.html'))]
    blocks = [text_of(block) for page in pages for block in PRE.findall(page)]
    examples = {name: doctest_text(own_doc(obj)) for name, obj, _ in OBJECTS if '>>>' in (own_doc(obj) or '')}
    assert {'Readout', 'Embed', 'EmbedAndReadout', 'ParameterlessReadout'} <= set(examples)
    # each example, prompts and printed output line by line, is one code block's text
    missing = [name for name, example in examples.items() if not any(example in '\n'.join(line.strip() for line in block.splitlines()) for block in blocks)]
    assert not missing, f'examples not rendered as a code block: {missing}'
    # and no doctest line is left in prose or quotes
    prose = [text_of(p) for page in pages for p in re.findall(r'<(?:p|blockquote)>(.*?)</(?:p|blockquote)>', page, re.S)]
    assert not [p for p in prose if '>>>' in p]


def test_the_api_pages_quote_nothing(site):
    # a docstring line that starts with '>' ("temperature: > 0" wrapped, or "> 1") is a
    # Markdown quote: the text vanishes into an indented block; no docstring means one
    quoted = {page.parent.name: text_of(q) for page in (site / 'api').glob('*/index.html') for q in re.findall(r'<blockquote>(.*?)</blockquote>', page.read_text(), re.S)}
    assert not quoted, f'quotes on the API pages: {quoted}'


def test_the_readouts_shared_arguments_render_as_a_list(site):
    page = api_page(site, 'readout')
    start = page.index('Arguments shared by the methods</summary>')
    shared = page[start : page.index('</details>', start)]
    items = [text_of(item) for item in re.findall(r'<li>(.*?)</li>', shared, re.S)]
    assert [item.split(':')[0] for item in items] == ['dist', 'selector_index, selector_config', 'action_mask', 'rescale_range', 'override_range', 'concat']


def test_the_readout_page_shows_the_main_api_first_and_every_member(site):
    order = H3_ID.findall(api_page(site, 'readout'))
    public = {name.split('.')[1] for name, _, _ in _members('Readout', package.Readout)}
    assert sorted(order) == sorted(public), 'the Readout page must render each public member once'
    first = order.index
    compat = ['sample_discrete', 'log_prob_discrete', 'maybe_concat', 'rescale_to_native']
    table = ['num_rows', 'get_selector', 'normalize']
    assert order[0] == 'forward'
    assert max(first(m) for m in ('forward', 'sample', 'log_prob', 'entropy', 'kl_div')) < min(first(m) for m in compat + table)


def test_readout_sample_links_to_readout_distribution_sample(site):
    page = api_page(site, 'readout')
    start = page.index('<h3 id="discrete_continuous_embed_readout.Readout.sample"')
    sample = page[start : page.index('<h3 ', start + 1)]
    target = '../readout-distribution/#discrete_continuous_embed_readout.ReadoutDistribution.sample'
    links = re.findall(rf'<a [^>]*href="{re.escape(target)}"[^>]*>(.*?)</a>', sample, re.S)
    mentions = text_of(sample).count('ReadoutDistribution.sample')
    assert len(links) >= 7 and len(links) == mentions, (len(links), mentions)  # every mention, the options' included
    assert 'id="discrete_continuous_embed_readout.ReadoutDistribution.sample"' in api_page(site, 'readout-distribution')


def test_filter_fns_calling_convention_is_on_the_page(site):
    page = text_of(api_page(site, 'readout-distribution'))
    assert 'filter_fn(logits, **filter_kwargs)' in page and 'must return logits of the same shape' in page


def test_make_test_installs_the_docs_extra():
    # CI runs `make test`: without the docs extra the site tests above would skip there
    makefile = (README.parent / 'Makefile').read_text()
    target = re.search(r'^test:(.*)$', makefile, re.M)
    assert target and '$(VENV)/.installed-docs' in target.group(1).split(), target


# the README and the documentation site's pages: every python block runs

PYTHON_BLOCK = re.compile(r'```python\n(.*?)```', re.S)
BLOCKS = PYTHON_BLOCK.findall(README.read_text())
DOCS = README.parent / 'docs'
DOC_BLOCKS = {f'{path.relative_to(DOCS)}:{i}': block for path in sorted(DOCS.rglob('*.md')) for i, block in enumerate(PYTHON_BLOCK.findall(path.read_text()))}


def run_block(source: str, name: str) -> None:
    registered = dict(CONTINUOUS_DISTRIBUTIONS)
    try:
        exec(compile(source, name, 'exec'), {})
    finally:
        CONTINUOUS_DISTRIBUTIONS.clear()
        CONTINUOUS_DISTRIBUTIONS.update(registered)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 2


def test_the_docs_have_examples():
    assert len(DOC_BLOCKS) >= 10


@pytest.mark.parametrize('index', range(len(BLOCKS)))
def test_readme_block_runs(index):
    run_block(BLOCKS[index], f'README block {index}')


@pytest.mark.parametrize('name', sorted(DOC_BLOCKS))
def test_docs_block_runs(name):
    run_block(DOC_BLOCKS[name], f'docs/{name}')
