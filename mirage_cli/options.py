"""Choices shared by the spec, the command line, the library and the bench, declared once."""

from __future__ import annotations

from enum import Enum


class _Choice(str, Enum):
    """A string choice: compares equal to its value and prints as it (``f"{MemoryMode.RGB}"`` is ``rgb``)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


class MemoryMode(_Choice):
    """What conditions each chunk (``mirage_cli.conditioning``)."""

    LATENT = "latent"  # the latent spatial memory (the method)
    RGB = "rgb"  # the explicit RGB point-cloud baseline
    NONE = "none"  # plain chunked TI2V


class PinMode(_Choice):
    """How memory-covered latents are held during denoising (``mirage_cli.denoise``)."""

    CLEAN = "clean"  # timestep 0, latents replaced before every step
    NOISED = "noised"  # forward-noised to the step's sigma, uniform timestep
