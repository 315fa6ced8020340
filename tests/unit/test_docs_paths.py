"""The README and docs/ point only inside the project: a user's clone has nothing else.

Every Markdown link target and every file path written in backticks must
name a file or folder of this tree, so a renamed module cannot leave the
docs pointing at nothing (the node-core split moved `node.py` to `node/`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
CODE_PATH = re.compile(r"`([\w./-]+/[\w.-]*|[\w-]+\.(?:py|md|toml))`")
SEARCHED = [ROOT, ROOT / "gossipmesh", ROOT / "docs"]
GENERATED = ("results/", "/tmp/", "/etc/", "/var/", "/run/", "/dev/", "/proc/", "/sys/", "~/")


def project_file_names() -> set[str]:
    names = {path.name for path in ROOT.iterdir() if path.is_file()}
    for folder in ("gossipmesh", "dns", "cli", "simulations", "tests", "benchmarks", "scripts"):
        names.update(path.name for path in (ROOT / folder).rglob("*") if path.is_file())
    return names


FILE_NAMES = project_file_names()


def resolves(path: str, document: Path) -> bool:
    if "/" not in path:  # a bare module name, as in a table of one package's parts
        return path in FILE_NAMES
    candidates = [document.parent / path, *(base / path for base in SEARCHED)]
    return any(candidate.exists() for candidate in candidates)


def referenced_paths(document: Path) -> list[str]:
    text = document.read_text()
    found = [target for target in LINK.findall(text) if "://" not in target]
    for path in CODE_PATH.findall(text):
        if path.startswith(GENERATED) or "*" in path or path.startswith("."):
            continue
        if "/" in path and not re.search(r"\.(py|md|toml|sh|txt)$|/$", path):
            continue  # a command argument or a value, not a file of the tree
        found.append(path)
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_document_points_only_inside_the_tree(document: Path) -> None:
    text = document.read_text()
    assert "../" not in text, f"{document.name} points outside the project"
    missing = [path for path in referenced_paths(document) if not resolves(path, document)]
    assert not missing, f"{document.name} names paths that do not exist: {missing}"


def test_architecture_is_in_the_project_and_linked_from_the_readme() -> None:
    assert (ROOT / "docs" / "architecture.md").exists()
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
