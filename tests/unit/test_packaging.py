"""What an installed credhop needs beyond its modules: the default rules as package data."""

from __future__ import annotations

import tomllib
from pathlib import Path

import credhop
from credhop import addon
from credhop.rules import load_rules

REPO = Path(__file__).resolve().parents[2]


def test_default_rules_are_package_data():
    assert addon.DEFAULT_RULES.exists()
    assert addon.DEFAULT_RULES.parent == Path(credhop.__file__).parent  # inside the package, not the checkout
    assert load_rules(addon.DEFAULT_RULES).rules
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert addon.DEFAULT_RULES.name in package_data["credhop"]  # or the wheel ships without it


def test_one_rules_file():
    assert not (REPO / "rules.yaml").exists()  # the packaged file is the only source of truth


def test_credhop_rules_defaults_to_the_packaged_file():
    from mitmproxy.test import taddons

    with taddons.context(addon.CredHop()) as tctx:
        assert Path(tctx.options.credhop_rules) == addon.DEFAULT_RULES
