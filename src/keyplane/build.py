"""How this installation was built: pure Python, or with the request hot path compiled by mypyc.

keyplane is pure Python; `make compiled` (or `KEYPLANE_COMPILE=1 pip install --no-build-isolation
.` in an environment holding keyplane's dependencies and mypy) also compiles the modules of
HOT_PATH_MODULES to C extensions with mypyc, the compiler mypy ships (black and mypy are
distributed compiled the same way). The .py files stay in the package; Python imports the
compiled module in their place. The code and its behaviour are the same, and the same test
suite runs against both builds (`make test`, `make test-compiled`); the compiled build runs 45%
fewer CPU instructions per request on the auth path (valgrind, docs/benchmarks.md).

This module is stdlib-only: setup.py reads HOT_PATH_MODULES from it at build time.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from importlib.util import find_spec

__all__ = ["HOT_PATH_MODULES", "compiled_modules", "hot_path_build"]

#: the modules every authenticated request runs through: header parsing, the verification
#: pipeline and key cache, signing, the key model and its permission/IP/limit rules, the route
#: policy, the limiter (in memory) and the alert signals, and the auth middleware itself.
#: Not here: modules tests or benchmarks replace attributes of (compiled classes refuse it,
#: e.g. keyplane.clock), and the demo venue, which both sides of the auth-overhead benchmark run.
HOT_PATH_MODULES = (
    "keyplane.alerts.signals",
    "keyplane.auth.cache",
    "keyplane.auth.context",
    "keyplane.auth.headers",
    "keyplane.auth.pipeline",
    "keyplane.http.limits",
    "keyplane.http.middleware",
    "keyplane.keys.ips",
    "keyplane.keys.limits",
    "keyplane.keys.model",
    "keyplane.keys.permissions",
    "keyplane.policy",
    "keyplane.ratelimit.memory",
    "keyplane.ratelimit.protocol",
    "keyplane.signing",
)


def compiled_modules() -> tuple[str, ...]:
    """The HOT_PATH_MODULES this interpreter would import as compiled extensions (.so), found
    by importlib without importing them; () for the pure-Python build."""
    compiled = []
    for name in HOT_PATH_MODULES:
        spec = find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is not None and origin.endswith(tuple(EXTENSION_SUFFIXES)):
            compiled.append(name)
    return tuple(compiled)


def hot_path_build() -> str:
    """The build of the hot path: "compiled" when every HOT_PATH_MODULES module is a compiled
    extension, "python" when none is, "partial" otherwise (a build left half done: rebuild
    with `make compiled`)."""
    count = len(compiled_modules())
    if count == len(HOT_PATH_MODULES):
        return "compiled"
    return "python" if count == 0 else "partial"
