"""Mirage CLI: long, 3D-consistent camera-controlled video on Wan2.2-TI2V-5B with a latent spatial memory."""

__version__ = "0.1.0"
