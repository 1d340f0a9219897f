"""The one probe of the Hugging Face cache: is a model's file already on this machine?

It never contacts the hub (no weights are downloaded by probing), and an id the cache cannot parse
counts as not cached. ``huggingface_hub`` is imported when a probe runs, not at start-up.
"""

from __future__ import annotations

from pathlib import Path


def cached_file(repo_id: str, filename: str) -> Path | None:
    """The local path of ``filename`` of the hub model ``repo_id`` in the Hugging Face cache (HF_HUB_CACHE
    / HF_HOME honoured), or None when it is not there or ``repo_id`` is not a hub id."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # not a hub id (a path, an empty name): nothing is cached under it
        return None
    return Path(found) if isinstance(found, str) else None
