"""Prompt text -> embeddings for the Wan2.2 transformer's cross-attention.

Two embedders share one interface (``encode(prompts) -> [B, L, D]``):

- ``UMT5TextEmbedder``: a tokenizer + ``transformers.UMT5EncoderModel`` (the real Wan2.2 text encoder,
  UMT5-XXL, 512 tokens; or the tiny random one of ``--preset tiny``). Like Wan's own pipeline, the
  embeddings past the prompt's real length are set to zero, so padding carries no signal.
- ``HashTextEmbedder``: no model at all. Each word is hashed to a seed and the seed draws a fixed
  random vector. Deterministic and offline; it stands in for the 5.7B-parameter UMT5-XXL when the
  5B transformer runs with random weights (``--random-weights``, speed measurements only).

``build_byte_tokenizer`` makes a tokenizer without any download: byte-level, every UTF-8 byte is a
token (so any language, including Wan's Chinese default negative prompt, tokenizes losslessly).
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from typing import Protocol

import torch

TEXT_MAX_LENGTH = 512
"""Wan2.2 encodes every prompt to exactly 512 token embeddings (zero past the prompt's end)."""


class TextEmbedder(Protocol):
    """What the backbone needs from a text encoder."""

    dim: int
    max_length: int

    def encode(self, prompts: list[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Embed prompts: returns [B, max_length, dim] in ``dtype`` on ``device``."""
        ...


def clean_prompt(text: str) -> str:
    """Undo HTML escapes and collapse whitespace, as Wan's pipeline does before tokenizing."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class UMT5TextEmbedder:
    """A tokenizer plus a ``UMT5EncoderModel``; embeddings zeroed past each prompt's length.

    ``tokenizer`` is any ``transformers`` tokenizer; ``text_encoder`` a ``UMT5EncoderModel`` whose
    ``config.d_model`` is the embedding size.
    """

    tokenizer: object
    text_encoder: torch.nn.Module
    max_length: int = TEXT_MAX_LENGTH

    @property
    def dim(self) -> int:
        return int(self.text_encoder.config.d_model)

    @torch.no_grad()
    def encode(self, prompts: list[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Embed prompts. Returns [B, max_length, dim] ``dtype`` on ``device``."""
        if self.text_encoder is None:
            raise RuntimeError("the text encoder was released (Backbone.release_text_encoder) after the prompts were embedded")
        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        input_ids = batch.input_ids.to(device)  # [B, L]
        attention_mask = batch.attention_mask.to(device)  # [B, L]
        hidden = self.text_encoder(input_ids, attention_mask).last_hidden_state  # [B, L, D]
        hidden = hidden.to(device=device, dtype=dtype)
        keep = attention_mask.to(device=device, dtype=torch.bool).unsqueeze(-1)  # [B, L, 1]
        return torch.where(keep, hidden, torch.zeros((), device=device, dtype=dtype))  # [B, L, D]


@dataclass
class HashTextEmbedder:
    """Deterministic model-free embedder: word -> hash -> seeded random vector.

    A prompt becomes its words (and punctuation marks) in order, then an end token; each is embedded
    by a unit-variance Gaussian vector drawn from a generator seeded by the BLAKE2 hash of
    (``seed``, word). Positions past the end are zero, as with the real encoder.
    """

    dim: int
    max_length: int = TEXT_MAX_LENGTH
    seed: int = 0

    def tokens(self, prompt: str) -> list[str]:
        """The prompt's tokens: lowercased words and single punctuation marks, then ``</s>``."""
        words = re.findall(r"\w+|[^\w\s]", clean_prompt(prompt).lower())
        return (words + ["</s>"])[: self.max_length]

    def token_vector(self, token: str) -> torch.Tensor:
        """The fixed embedding of one token: [dim] float32 on the CPU."""
        digest = hashlib.blake2b(f"{self.seed}\x00{token}".encode(), digest_size=8).digest()
        generator = torch.Generator(device="cpu").manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
        return torch.randn(self.dim, generator=generator)  # [D]

    def encode(self, prompts: list[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Embed prompts. Returns [B, max_length, dim] ``dtype`` on ``device``."""
        out = torch.zeros(len(prompts), self.max_length, self.dim)  # [B, L, D]
        for b, prompt in enumerate(prompts):
            for position, token in enumerate(self.tokens(prompt)):
                out[b, position] = self.token_vector(token)
        return out.to(device=device, dtype=dtype)


def build_byte_tokenizer(max_length: int = TEXT_MAX_LENGTH):
    """A byte-level tokenizer built locally (no hub): ids 0 ``<pad>``, 1 ``</s>``, 2 ``<unk>``, then 256 bytes.

    Returns a ``transformers.PreTrainedTokenizerFast`` that appends ``</s>`` like T5's tokenizers.
    ``save_pretrained`` writes ``tokenizer.json`` + ``tokenizer_config.json`` that ``AutoTokenizer``
    reads back offline.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {token: index for index, token in enumerate(specials)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )

