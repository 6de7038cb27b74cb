"""The package version, read from the installed distribution's metadata (pyproject.toml is its
only source): ``vlens_async.__version__``, the User-Agent and ``vlens --version`` all use it.

Read on first use: ``importlib.metadata`` costs about 35 ms to import, a tenth of
``import vlens_async``, and most processes never ask.
"""

from __future__ import annotations

import functools

__all__ = ["user_agent", "version"]


@functools.cache
def version() -> str:
    """The installed version of vlens-async (``0+unknown`` in a source tree never installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("vlens-async")
    except PackageNotFoundError:
        return "0+unknown"


def user_agent() -> str:
    """The ``User-Agent`` every request carries."""
    return f"vlens-async/{version()}"
