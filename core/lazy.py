"""Package APIs that import their modules on first use, so a missing extra is one line, not a traceback."""

import importlib


def lazy_exports(package: str, api: dict[str, str]):
    """A module `__getattr__` importing each public name from `package.<module>` on first use.

    `api` maps a name to "module" or "module:attribute". Lets `charlstm.train` list its API
    without importing torch, so a missing extra is reported as one line, not a traceback."""

    def __getattr__(name: str):
        if name not in api:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = api[name].partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attribute or name)

    return __getattr__
