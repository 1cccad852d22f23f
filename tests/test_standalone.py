"""The package and its tests need nothing beside the repository.

A user's clone has no ``../shared``: what a test checks against lives in ``configs/`` and
``tests/reference/``. This test fails on any path into a folder named ``shared`` in code or
scripts; a comment may still name where reference data came from.
"""

import io
import re
import tokenize
from pathlib import Path

import pytest

from tests.published import REPO_ROOT

# "shared" as a path segment: between separators or quotes ("../shared/x", "shared",
# parent / "shared"), or starting a relative path ("cd shared/reference").
SHARED_PATH = re.compile(r"""(?:^|[/\\'"])shared(?:[/\\'"]|$)|(?:[\s=(])shared[/\\]""")
PYTHON_ROOTS = ("mask2former", "tests", "tools", "datasets", "demo", "benchmarks", "setup.py")
SCRIPTS = ("pyproject.toml", ".ci")
THIS_FILE = Path(__file__).resolve()  # holds examples of what it refuses
STRING_TOKENS = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


def _files(roots: tuple[str, ...], pattern: str) -> list[Path]:
    files = []
    for root in (REPO_ROOT / r for r in roots):
        files += [root] if root.is_file() else sorted(p for p in root.rglob(pattern) if p.is_file())
    return files


def shared_paths_in_python(source: str) -> list[str]:
    """String literals of ``source`` (docstrings included, comments not) naming ``shared``."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [t.string for t in tokens if t.type in STRING_TOKENS and SHARED_PATH.search(t.string)]


def shared_paths_in_script(text: str) -> list[str]:
    """Lines of a shell or TOML file naming ``shared``, after dropping ``#`` comments."""
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    return [line for line in lines if SHARED_PATH.search(line)]


@pytest.mark.parametrize(
    "source",
    [
        'REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"\n',
        'path = "../shared/reference/metadata"\n',
        "path = os.path.join(root, '..', 'shared')\n",
        'path = f"{root}/shared/reference"\n',
        '"""Reads ``../shared/reference/README.md``."""\n',
    ],
)
def test_a_path_into_shared_is_found(source):
    assert shared_paths_in_python(source)
    assert shared_paths_in_script(source)


@pytest.mark.parametrize(
    "source",
    [
        "# counts from ../shared/reference/README.md\nx = 1\n",
        '"""Pieces shared by the mappers."""\n',
        "seed = comm.shared_random_seed()\n",
        "self.shared = module\n",
    ],
)
def test_comments_and_the_word_shared_are_not_paths(source):
    assert not shared_paths_in_python(source)
    assert not shared_paths_in_script(source)


def test_no_code_reads_a_shared_folder_beside_the_repository():
    python_files = [p for p in _files(PYTHON_ROOTS, "*.py") if p.resolve() != THIS_FILE]
    assert len(python_files) > 100 and REPO_ROOT / "tests" / "published.py" in python_files
    found = {
        str(p.relative_to(REPO_ROOT)): hits
        for p in python_files
        if (hits := shared_paths_in_python(p.read_text()))
    }
    for path in _files(SCRIPTS, "*"):
        if hits := shared_paths_in_script(path.read_text()):
            found[str(path.relative_to(REPO_ROOT))] = hits
    assert not found, found
