"""Depth: providers for new frames, alignment to the memory, and the start image's field of view (``intrinsics: auto``)."""
