"""Versions of the software a render ran with (written into reports and checkpoint manifests)."""

from __future__ import annotations

import importlib.metadata
import platform

from mirage_cli import __version__

# Packages whose versions shape a render's output or speed; those not installed are left out.
PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "numpy",
    "av",
    "pycolmap",
    "matplotlib",
)


def package_versions() -> dict[str, str]:
    """``{"python": ..., "mirage-cli": ..., <package>: <version>}`` for the installed ``PACKAGES``."""
    out = {"python": platform.python_version(), "mirage-cli": __version__}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
