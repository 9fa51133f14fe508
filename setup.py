"""Build hook: pure Python by default; KEYPLANE_COMPILE=1 also compiles the request hot path
(keyplane.build.HOT_PATH_MODULES) to C extensions with mypyc.

mypyc type-checks what it compiles, so it needs keyplane's dependencies and mypy importable:
build with `pip install --no-build-isolation .` in such an environment (`make compiled` does).
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from setuptools import setup

ext_modules = []
if os.environ.get("KEYPLANE_COMPILE") == "1":
    from mypyc.build import mypycify

    here = Path(__file__).resolve().parent
    hot_path = runpy.run_path(str(here / "src" / "keyplane" / "build.py"))["HOT_PATH_MODULES"]
    paths = [str(Path("src", *name.split(".")).with_suffix(".py")) for name in hot_path]
    ext_modules = mypycify(paths, opt_level="3")

setup(ext_modules=ext_modules)
