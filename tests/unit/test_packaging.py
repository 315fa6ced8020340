"""The package layout: mapped sub-packages exist and nothing leaks to the top level."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {
    "gossipmesh": "gossipmesh",
    "dns": "gossipmesh.dns",
    "cli": "gossipmesh.cli",
    "simulations": "gossipmesh.simulations",
}


def _declared_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(config["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared() -> None:
    declared = _declared_packages()
    for folder, dotted in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            name = ".".join((dotted, *relative))
            assert name in declared, f"{name} missing from [tool.setuptools] packages"


def test_declared_packages_import() -> None:
    for name in _declared_packages():
        importlib.import_module(name)


def test_no_top_level_dns_cli_or_simulations(tmp_path: Path) -> None:
    """Outside the source tree, `dns`, `cli` and `simulations` are not ours."""
    import gossipmesh.dns

    assert Path(gossipmesh.dns.__file__).parent == ROOT / "dns"
    probe = (
        "import importlib.util, json\n"
        "found = {}\n"
        "for name in ('dns', 'cli', 'simulations'):\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    found[name] = spec.origin if spec else None\n"
        "print(json.dumps(found))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    for name, origin in json.loads(result.stdout).items():
        assert origin is None or not origin.startswith(str(ROOT)), f"{name} leaks as top level"
