"""The sdist's file list: what a working tree collects (test caches, virtualenvs,
build and docs outputs, benchmark results, example outputs) must not ship, and what
building and testing need must. Prints the offenders; exit 1 if any.

    python .ci/check_sdist.py dist/discrete_continuous_embed_readout-0.3.0.tar.gz
"""

from __future__ import annotations

import re
import sys
import tarfile

FORBIDDEN = {
    'a test cache': r'(^|/)(\.hypothesis|\.pytest_cache|\.ruff_cache|\.mypy_cache)/',
    'bytecode': r'(^|/)__pycache__/|\.py[co]$',
    'a virtualenv or wheel cache': r'(^|/)(\.venv|venv|\.whl)/',
    'a build output': r'^(dist|build|site)/|\.egg-info/',
    'a benchmark result': r'^benchmarks/results/',
    'an example output': r'(^|/)outputs/|\.(png|jpe?g|gif|pdf|svg)$',
    'a checkpoint outside the test fixtures': r'^(?!tests/data/).*\.(pt|pth|ckpt|safetensors)$',
    'a git directory': r'(^|/)\.git/',
}
REQUIRED = ['pyproject.toml', 'README.md', 'LICENSE', 'CHANGELOG.md', 'discrete_continuous_embed_readout/__init__.py',
            'discrete_continuous_embed_readout/py.typed', 'tests/conftest.py']


def members(sdist: str) -> list[str]:
    """Paths inside the archive, without its ``name-version/`` top folder."""
    with tarfile.open(sdist) as tar:
        return [m.name.split('/', 1)[1] for m in tar.getmembers() if m.isfile() and '/' in m.name]


def offenders(paths: list[str]) -> list[str]:
    found = [f'{path}: {why}' for path in paths for why, pattern in FORBIDDEN.items() if re.search(pattern, path)]
    return found + [f'{path}: missing' for path in REQUIRED if path not in paths]


def main() -> int:
    paths = members(sys.argv[1])
    found = offenders(paths)
    shown = found[:20] + ([f'... and {len(found) - 20} more'] if len(found) > 20 else [])
    print('\n'.join(shown) if found else f'sdist file list ok ({len(paths)} files)')
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main())
