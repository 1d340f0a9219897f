"""Test-only pauses, so that tests can kill a render at a precise moment without long renders.

``MIRAGE_TEST_PAUSE="checkpoint_write=2,denoise_step=0.3"`` makes ``pause("checkpoint_write")`` sleep
2 seconds inside a checkpoint save (after each file it writes into its temporary directory) and ``pause("denoise_step")``
0.3 seconds after every denoising step. Unset (always, outside the tests), ``pause`` does nothing.
Pauses never change what is computed, only when.
"""

from __future__ import annotations

import os
import time

ENV = "MIRAGE_TEST_PAUSE"


def pause(point: str) -> None:
    """Sleep as long as ``MIRAGE_TEST_PAUSE`` asks for ``point`` (see the module docstring)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, seconds = item.partition("=")
        if name.strip() == point:
            time.sleep(float(seconds))
