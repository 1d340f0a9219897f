"""Where real weights come from: a diffusers-layout directory, or a hub id in the Hugging Face cache.

Missing files are named before anything loads; offline mode is huggingface_hub's own
(``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.options import DEFAULT_MODEL

logger = logging.getLogger(__name__)


WEIGHTS_HINT = (
    f"get the weights with `hf download {DEFAULT_MODEL}` (or `huggingface-cli download {DEFAULT_MODEL}`) "
    "on a machine with internet access, or pass --model DIR (a diffusers-layout directory), "
    "or use --preset tiny for tiny random components"
)


def _weights_problems(folder: Path, single: str, index: str, what: str) -> list[str]:
    """Missing-file messages for one component's safetensors weights (single file or sharded)."""
    if (folder / single).is_file():
        return []
    index_path = folder / index
    if not index_path.is_file():
        return [f"{folder.name}/{single} is missing ({what}; safetensors weights are required)"]
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{folder.name}/{index} is unreadable ({exc})"]
    return [
        f"{folder.name}/{shard} is missing ({what}, a shard listed in {index})"
        for shard in shards
        if not (folder / shard).is_file()
    ]


def check_model_dir(directory: str | os.PathLike) -> list[str]:
    """Everything missing from a diffusers-layout Wan2.2 model directory, one message per missing item.

    Needs ``vae/`` and ``transformer/`` (``config.json`` + ``diffusion_pytorch_model.safetensors`` or a
    sharded ``.safetensors.index.json`` with its shards), ``text_encoder/`` (``config.json`` +
    ``model.safetensors`` or index + shards), ``tokenizer/`` (``tokenizer_config.json`` and
    ``tokenizer.json`` or ``spiece.model``) and ``scheduler/scheduler_config.json``. Empty when complete.
    """
    root = Path(directory)
    missing: list[str] = []
    diffusers_weights = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")
    components = [
        ("vae", "config.json", diffusers_weights, "the VAE weights"),
        ("transformer", "config.json", diffusers_weights, "the transformer weights"),
        ("text_encoder", "config.json", ("model.safetensors", "model.safetensors.index.json"), "the text encoder"),
    ]
    for name, config_file, (single, index), what in components:
        folder = root / name
        if not folder.is_dir():
            missing.append(f"{name}/ is missing (the {name} subfolder)")
            continue
        if not (folder / config_file).is_file():
            missing.append(f"{name}/{config_file} is missing")
        missing.extend(_weights_problems(folder, single, index, what))
    tokenizer = root / "tokenizer"
    if not tokenizer.is_dir():
        missing.append("tokenizer/ is missing (the tokenizer subfolder)")
    else:
        if not (tokenizer / "tokenizer_config.json").is_file():
            missing.append("tokenizer/tokenizer_config.json is missing")
        if not ((tokenizer / "tokenizer.json").is_file() or (tokenizer / "spiece.model").is_file()):
            missing.append("tokenizer/tokenizer.json (or spiece.model) is missing")
    if not (root / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json is missing")
    return missing


def _is_hub_id(model: str) -> bool:
    """True when ``model`` reads as a hub id ``org/name`` and is not an existing local path."""
    if os.path.exists(Path(model).expanduser()) or model.startswith((".", "/", "~")):
        return False
    parts = model.split("/")
    return len(parts) == 2 and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", part) for part in parts)


def _hub_cache_dir() -> str:
    """The hub cache directory, read from the environment at call time (HF_HUB_CACHE, then HF_HOME)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return constants.HF_HUB_CACHE


def _offline(local_files_only: bool | None) -> bool:
    """Whether the hub may not be contacted: ``local_files_only`` if given, else huggingface_hub's own
    offline rule (``HF_HUB_OFFLINE``)."""
    if local_files_only is not None:
        return local_files_only
    from huggingface_hub import is_offline_mode

    return is_offline_mode()


HUB_PATTERNS = ["model_index.json", "vae/*", "transformer/*", "text_encoder/*", "tokenizer/*", "scheduler/*"]


def resolve_model_dir(model: str, local_files_only: bool | None = None) -> Path:
    """Turn ``--model`` into a complete local diffusers-layout directory, or raise InputError.

    A local directory is checked as is. A hub id is looked up in the Hugging Face cache; when it is
    absent or incomplete and the hub may be contacted (not HF_HUB_OFFLINE / ``local_files_only``),
    the missing files are fetched with ``huggingface_hub.snapshot_download``. Every failure names
    the missing files and how to get them.
    """
    path = Path(model).expanduser()
    if os.path.isdir(path):
        return _complete_or_raise(path)
    if _is_hub_id(model):
        return _resolve_hub_id(model, local_files_only)
    message = "not a directory" if os.path.exists(path) else "model directory does not exist"
    raise InputError(Problem(file=str(path), field="model", message=f"{message}; {WEIGHTS_HINT}"))


def _complete_or_raise(directory: Path) -> Path:
    """Return ``directory`` when ``check_model_dir`` finds nothing missing, else raise InputError."""
    missing = check_model_dir(directory)
    if missing:
        problems = [Problem(file=str(directory), field="model", message=message) for message in missing]
        problems.append(Problem(file=str(directory), field="model", message=WEIGHTS_HINT))
        raise InputError(problems)
    return directory


def cached_snapshot(repo_id: str) -> Path | None:
    """The hub model's snapshot folder in the Hugging Face cache (maybe incomplete: ``check_model_dir``),
    or None when nothing of it is cached; never contacts the hub."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=_hub_cache_dir(), local_files_only=True, allow_patterns=HUB_PATTERNS))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def model_on_machine(model: str) -> tuple[bool, str]:
    """Whether the diffusers model ``model`` (a folder or a hub id) is complete on this machine, and
    where it is or what is missing; never contacts the hub."""
    path = Path(model).expanduser()
    if os.path.isdir(path):
        missing = check_model_dir(path)
        return (False, f"{path} is incomplete: {missing[0]}") if missing else (True, str(path))
    if not _is_hub_id(model):
        return False, f"{path} does not exist"
    snapshot = cached_snapshot(model)
    if snapshot is None:
        return False, f"not in the Hugging Face cache ({_hub_cache_dir()})"
    missing = check_model_dir(snapshot)
    return (False, f"incomplete in the Hugging Face cache: {missing[0]}") if missing else (True, str(snapshot))


def _resolve_hub_id(repo_id: str, local_files_only: bool | None) -> Path:
    """Find (or, when allowed, fetch) a hub model's snapshot in the cache."""
    from huggingface_hub import snapshot_download

    cache_dir = _hub_cache_dir()
    offline = _offline(local_files_only)
    snapshot = cached_snapshot(repo_id)
    if snapshot is not None and not check_model_dir(snapshot):
        return snapshot
    failure = None
    if not offline:
        logger.info("fetching %s from the Hugging Face hub into %s", repo_id, cache_dir)
        try:
            snapshot = Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=HUB_PATTERNS))
        except Exception as exc:  # network, auth, unknown repo: all become one user-facing message
            failure = _short_reason(exc)
        else:
            return _complete_or_raise(snapshot)
    if snapshot is None:
        mode = "offline mode (HF_HUB_OFFLINE)" if offline else f"the download failed ({failure})"
        raise InputError(
            Problem(
                file=None,
                field="model",
                message=f"{repo_id} is not in the Hugging Face cache ({cache_dir}) and {mode}; {WEIGHTS_HINT}",
            )
        )
    return _complete_or_raise(snapshot)


def _short_reason(exc: Exception) -> str:
    """The first line of a hub error, at most 160 characters: the library's own text ends with advice
    that does not fit our message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:160]
