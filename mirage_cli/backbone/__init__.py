"""The Wan2.2-TI2V-5B components: load (real, tiny, random-weights), encode prompts, VAE encode/decode.

Three ways to get a ``Backbone``, all through the same diffusers / transformers classes
(``AutoencoderKLWan``, ``WanTransformer3DModel``, ``UMT5EncoderModel``):

- ``load_backbone(model)``: a diffusers model id (resolved through the Hugging Face cache, honouring
  offline mode) or a local directory in the diffusers layout (``vae/``, ``transformer/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/``). Missing files are named before anything loads.
- ``load_backbone(options=BackboneOptions(preset="tiny"))``: tiny random components, seeded, seconds on a CPU; the text
  encoder is a tiny random UMT5 behind a byte-level tokenizer built locally. ``save_tiny_model(dir)``
  writes the same components in the diffusers layout, so ``load_backbone(dir)`` exercises the real
  loading code.
- ``load_backbone(options=BackboneOptions(random_weights=True))``: the real 5B architecture with random weights, created
  directly on the target device (no 20 GB CPU init), with a model-free hashed text embedder at
  4096 x 512. For measuring speed on a GPU without any download.

Modules: ``configs`` (the components' facts), ``components`` (``Backbone``: prompts, VAE encode and
decode; latents outside this package are normalized), ``random_components`` (tiny preset, random
weights), ``model_dir`` (directories and the hub cache), ``loading`` (``load_backbone`` and
diffusers' memory/speed options, passed through, not reimplemented).
"""


from mirage_cli.backbone.configs import (
    CPU_PARAMETER_LIMIT,
    SPATIAL_SCALE,
    TEMPORAL_SCALE,
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    WAN_DEFAULT_NEGATIVE_PROMPT,
    tiny_text_encoder_config,
    tiny_transformer_config,
    tiny_vae_config,
    wan22_scheduler_config,
    wan22_transformer_config,
    wan22_vae_config,
)
from mirage_cli.backbone.loading import (
    apply_options,
    check_attention_backend,
    load_backbone,
    resolve_device,
    resolve_dtype,
    set_attention_backend,
)
from mirage_cli.backbone.model_dir import WEIGHTS_HINT, check_model_dir, resolve_model_dir
from mirage_cli.backbone.random_components import (
    TinyComponents,
    build_tiny_components,
    count_parameters,
    materialize_random,
    save_tiny_model,
)
from mirage_cli.backbone.wan import Backbone

__all__ = [
    "Backbone",
    "CPU_PARAMETER_LIMIT",
    "SPATIAL_SCALE",
    "TEMPORAL_SCALE",
    "WAN22_LATENTS_MEAN",
    "WAN22_LATENTS_STD",
    "WAN_DEFAULT_NEGATIVE_PROMPT",
    "WEIGHTS_HINT",
    "TinyComponents",
    "apply_options",
    "build_tiny_components",
    "check_model_dir",
    "count_parameters",
    "load_backbone",
    "materialize_random",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_dir",
    "save_tiny_model",
    "set_attention_backend",
    "check_attention_backend",
    "tiny_text_encoder_config",
    "tiny_transformer_config",
    "tiny_vae_config",
    "wan22_scheduler_config",
    "wan22_transformer_config",
    "wan22_vae_config",
]
