"""``Backbone``: the loaded Wan2.2 components on one device, with prompt encoding and VAE encode/decode.

Latents are *normalized* everywhere outside this package: ``(mu - latents_mean) / latents_std`` per
channel, as Wan's pipeline feeds the transformer (docs/CONVENTIONS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mirage_cli.backbone.configs import WAN_DEFAULT_NEGATIVE_PROMPT
from mirage_cli.backbone.cpu_vae import route_vae_cpu_kernels
from mirage_cli.backbone.text import TextEmbedder


@dataclass
class Backbone:
    """Wan2.2-TI2V components on one execution device.

    ``vae`` (float32), ``transformer`` (in ``dtype``, or fp8 storage with layerwise casting),
    ``text_embedder`` (prompt -> [1, 512, text_dim]), ``scheduler_config`` (UniPC config dict).
    ``device`` is where computation happens (with offloading the weights live on the CPU between
    uses). ``source`` says where the weights came from (a directory, ``"tiny"``, ``"random-weights"``).
    ``waiting``: components loaded on the CPU that move to the device at their first use (without
    offloading on a GPU: the text encoder embeds the prompts and is freed before the transformer
    arrives, so the two never share the device).
    """

    vae: torch.nn.Module
    transformer: torch.nn.Module
    text_embedder: TextEmbedder
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype
    source: str
    offload: str = "none"
    offload_hooks: dict = field(default_factory=dict, repr=False)
    waiting: dict = field(default_factory=dict, repr=False)
    embedded: dict = field(default_factory=dict, repr=False)  # (prompt, negative) -> (cond, uncond), see encode_prompt

    def __post_init__(self):
        if self.vae is not None:  # its slow CPU kernels routed to fast ones (backbone/cpu_vae.py)
            route_vae_cpu_kernels(self.vae)

    @property
    def z_dim(self) -> int:
        """Latent channels C (48 for Wan2.2)."""
        return int(self.vae.config.z_dim)

    @property
    def spatial_scale(self) -> int:
        """Pixels per latent cell (16)."""
        return int(self.vae.config.scale_factor_spatial)

    @property
    def temporal_scale(self) -> int:
        """Pixel frames per latent frame after the first (4)."""
        return int(self.vae.config.scale_factor_temporal)

    @property
    def text_dim(self) -> int:
        """Width D of the prompt embeddings the transformer cross-attends to."""
        return int(self.transformer.config.text_dim)

    def latents_mean(self) -> torch.Tensor:
        """Per-channel latent mean: [1, C, 1, 1, 1] float32 on ``device``."""
        return torch.tensor(self.vae.config.latents_mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1, 1)

    def latents_std(self) -> torch.Tensor:
        """Per-channel latent std: [1, C, 1, 1, 1] float32 on ``device``."""
        return torch.tensor(self.vae.config.latents_std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1, 1)

    def use(self, component: str) -> None:
        """Before ``component`` (``"vae"``, ``"transformer"`` or ``"text_encoder"``) runs: move it to the
        device if it is still ``waiting``; with ``offload="model"``, move every other component back to
        the CPU (the component itself is moved to the device by its accelerate hook when called).
        """
        module = self.waiting.pop(component, None)
        if module is not None:
            module.to(self.device)
        for name, hook in self.offload_hooks.items():
            if name != component:
                hook.offload()

    def release_text_encoder(self) -> int:
        """Free the text encoder once the prompts are embedded: a render embeds its two prompts once,
        and UMT5-XXL would otherwise hold 10.6 GiB of the device for the whole render. Returns the
        bytes of weights released (0 when there is no text encoder module). Later ``encode_prompt``
        calls answer prompts already embedded and raise for new ones."""
        encoder = getattr(self.text_embedder, "text_encoder", None)
        if encoder is None:
            return 0
        released = sum(p.numel() * p.element_size() for p in encoder.parameters())
        self.waiting.pop("text_encoder", None)
        hook = self.offload_hooks.pop("text_encoder", None)
        if hook is not None:
            hook.remove()  # an --offload model hook: the encoder stays where it ran (the device)
            del hook
        # its tensors go now, whoever still holds the module (a transformers model is part of reference
        # cycles, which only a later collection would free: measured on a GPU, 10.6 GiB kept through chunk 0)
        encoder.to("meta")
        self.text_embedder.text_encoder = None
        del encoder
        if self.device.type == "cuda":
            import gc

            gc.collect()
            torch.cuda.empty_cache()
        return released

    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the prompt and the negative prompt (Wan's default when ``None``).

        Returns ``(cond, uncond)``, each [1, L, D] in ``dtype`` on ``device`` (L = 512 for Wan2.2).
        A pair embedded before is answered from ``embedded`` (the same tensors): renders that share
        this backbone (``mirage bench``) embed their prompts once, and need no text encoder after that.
        """
        if negative_prompt is None:
            negative_prompt = WAN_DEFAULT_NEGATIVE_PROMPT
        key = (prompt, negative_prompt)
        if key not in self.embedded:
            self.use("text_encoder")
            embeds = self.text_embedder.encode([prompt, negative_prompt], device=self.device, dtype=self.dtype)
            self.embedded[key] = (embeds[0:1], embeds[1:2])  # [1, L, D] each
        return self.embedded[key]

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE-encode pixels to normalized latents (posterior mode, like Wan's pipeline).

        ``pixels``: [B, 3, F, H, W] float in [-1, 1], F = 4k+1, H and W multiples of 16.
        Returns [B, C, T, h, w] float32 on ``device``: T = (F-1)/4 + 1, h = H/16, w = W/16,
        normalized as (mu - latents_mean) / latents_std.
        """
        _check_pixels(pixels, self.spatial_scale, self.temporal_scale)
        self.use("vae")
        posterior = self.vae.encode(pixels.to(device=self.device, dtype=torch.float32)).latent_dist
        mu = posterior.mode().to(device=self.device, dtype=torch.float32)  # [B, C, T, h, w]
        return (mu - self.latents_mean()) * (1.0 / self.latents_std())  # the pipeline's exact arithmetic

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode normalized latents to pixels.

        ``latents``: [B, C, T, h, w] normalized (see ``encode_video``). Returns [B, 3, F, H, W] float32
        in [-1, 1] on ``device``: F = 4(T-1)+1, H = 16h, W = 16w.
        """
        if latents.ndim != 5 or latents.shape[1] != self.z_dim:
            raise ValueError(
                f"latents: expected shape [B, {self.z_dim}, T, h, w], got {list(latents.shape)}"
            )
        self.use("vae")
        z = latents.to(device=self.device, dtype=torch.float32) / (1.0 / self.latents_std()) + self.latents_mean()
        pixels = self.vae.decode(z, return_dict=False)[0]  # [B, 3, F, H, W]
        return pixels.to(device=self.device, dtype=torch.float32).clamp_(-1.0, 1.0)  # the decode's own output: in place

    def make_scheduler(self, shift: float):
        """A fresh ``UniPCMultistepScheduler`` (flow prediction, flow sigmas) with ``flow_shift=shift``."""
        from diffusers import UniPCMultistepScheduler

        config = {
            **self.scheduler_config,
            "prediction_type": "flow_prediction",
            "use_flow_sigmas": True,
            "flow_shift": float(shift),
        }
        return UniPCMultistepScheduler.from_config(config)


def _check_pixels(pixels: torch.Tensor, spatial: int, temporal: int) -> None:
    """Raise ValueError unless ``pixels`` is [B, 3, F, H, W] with F = 4k+1 and H, W multiples of 16."""
    if pixels.ndim != 5 or pixels.shape[1] != 3:
        raise ValueError(f"pixels: expected shape [B, 3, F, H, W], got {list(pixels.shape)}")
    frames, height, width = pixels.shape[2:]
    if (frames - 1) % temporal != 0:
        raise ValueError(f"pixels: frame count F must be {temporal}k+1, got F={frames}")
    if height % spatial or width % spatial:
        raise ValueError(f"pixels: H and W must be multiples of {spatial}, got H={height}, W={width}")
