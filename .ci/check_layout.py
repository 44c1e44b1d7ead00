"""Layout limits of the package (STYLE.md, "Layout"): no module over MAX_LINES
lines, no body of a public function or of a public class's public method over
MAX_BODY lines (docstring excluded). Prints the offenders; exit 1 if any."""

from __future__ import annotations

import ast
import pathlib
import sys

MAX_LINES, MAX_BODY = 300, 15
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'discrete_continuous_embed_readout'


def body_lines(node) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], 'value', None), ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]
    return 0 if not body else body[-1].end_lineno - body[0].lineno + 1


def public_functions(tree):
    """``(name, node)`` of the public functions and the public methods of public classes."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith('_'):
            yield node.name, node
        if isinstance(node, ast.ClassDef) and not node.name.startswith('_'):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith('_'):
                    yield f'{node.name}.{item.name}', item


def offenders() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob('*.py')):
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_LINES:
            found.append(f'{path.relative_to(PACKAGE)}: {lines} lines')
        if path.name.startswith('_') and path.name != '__init__.py' or '__all__' not in text:
            continue  # an internal module (a leading underscore, or no __all__): no public methods
        for name, node in public_functions(ast.parse(text)):
            if body_lines(node) > MAX_BODY:
                found.append(f'{path.relative_to(PACKAGE)}: {name} body {body_lines(node)} lines')
    return found


def main() -> int:
    found = offenders()
    print('\n'.join(found) or 'layout ok')
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main())
