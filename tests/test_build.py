"""The two builds (keyplane.build): pure Python, and the hot path compiled by mypyc.

`make test` runs this suite on the editable pure-Python install, `make test-compiled` on the
compiled one (.venv-compiled); KEYPLANE_EXPECT_BUILD names the build the run must be testing,
so a compiled run that silently fell back to the .py files fails here.
"""

from __future__ import annotations

import importlib
import os
import runpy
from pathlib import Path

import pytest

from keyplane.build import HOT_PATH_MODULES, compiled_modules, hot_path_build

ROOT = Path(__file__).resolve().parents[1]


def test_every_hot_path_module_exists_as_source() -> None:
    for name in HOT_PATH_MODULES:
        path = ROOT / "src" / Path(*name.split(".")).with_suffix(".py")
        assert path.is_file(), f"{name}: no {path}"


def test_setup_compiles_exactly_the_hot_path_list() -> None:
    # setup.py reads the list from the module's file (no keyplane import at build time)
    assert runpy.run_path(str(ROOT / "src" / "keyplane" / "build.py"))["HOT_PATH_MODULES"] == (
        HOT_PATH_MODULES
    )


def test_build_reported_matches_the_modules_imported() -> None:
    imported = {
        name
        for name in HOT_PATH_MODULES
        if not str(importlib.import_module(name).__file__).endswith(".py")
    }
    assert set(compiled_modules()) == imported
    expected = {0: "python", len(HOT_PATH_MODULES): "compiled"}.get(len(imported), "partial")
    assert hot_path_build() == expected


@pytest.mark.skipif(
    "KEYPLANE_EXPECT_BUILD" not in os.environ, reason="KEYPLANE_EXPECT_BUILD not set"
)
def test_the_run_tests_the_build_it_names() -> None:
    assert hot_path_build() == os.environ["KEYPLANE_EXPECT_BUILD"]
