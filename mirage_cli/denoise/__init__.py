"""The denoising loop of one chunk and diffusers' step caches on the transformer."""
