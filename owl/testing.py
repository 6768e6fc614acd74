"""Reference models for tests and benchmarks: transformers' OwlViT/Owlv2 built offline.

Parity is shown against an independent implementation on identical weights. This module builds a
transformers detector from an owl `ModelConfig` (no download), re-draws its weights so that every
bias and LayerNorm differs from the default init (a mis-mapped parameter then changes the outputs),
saves it as a transformers directory, and runs its forward pass on owl-layout inputs.

It imports torch and transformers, which are test-only dependencies; owl itself never imports
this module.
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
from pathlib import Path
from typing import Any

import numpy as np

from owl.checkpoints.transformers_format import config_to_hf
from owl.models.configs import ModelConfig


def build_transformers_detector(config: ModelConfig, seed: int = 0) -> Any:
    """A transformers OwlViTForObjectDetection / Owlv2ForObjectDetection with re-drawn weights.

    Weights: LayerNorm scales 1 + 0.1 N(0, 1), biases 0.05 N(0, 1), detection-head kernels
    N(0, 1 / fan_in) (transformers' own head init saturates the box sigmoid), the rest as
    transformers initialises them under `torch.manual_seed(seed)`.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    hf = config_to_hf(config)
    cls_name = hf["architectures"][0]
    cfg_cls = transformers.Owlv2Config if config.family == "owlv2" else transformers.OwlViTConfig
    hf_config = cfg_cls(
        text_config=hf["text_config"],
        vision_config=hf["vision_config"],
        projection_dim=hf["projection_dim"],
    )
    model = getattr(transformers, cls_name)(hf_config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "layer_norm" in name or "layernorm" in name:
                p.copy_(1 + 0.1 * noise if name.endswith("weight") else 0.05 * noise)
            elif name.endswith("bias"):
                p.copy_(0.05 * noise)
            elif name.split(".")[0] in ("class_head", "box_head", "objectness_head"):
                p.copy_(noise / np.sqrt(p.shape[-1]))
    return model


def save_transformers_detector(model: Any, directory: str | Path) -> Path:
    """Writes config.json + model.safetensors, as `from_pretrained` reads them."""
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    json.loads((directory / "config.json").read_text())  # fail early on a broken config
    return directory


def transformers_outputs(
    model: Any, pixel_values: np.ndarray, input_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """Runs the transformers detector on owl-layout inputs.

    Args:
      pixel_values: float32 [B, S, S, 3] normalised (owl's NHWC layout).
      input_ids: int [Q, 16] queries shared by the batch.
    Returns:
      numpy logits [B, P, Q], pred_boxes [B, P, 4], class_embeds [B, P, E],
      image_embeds [B, g, g, W], and objectness_logits [B, P] for OWLv2.
    """
    import torch

    batch = pixel_values.shape[0]
    ids = np.tile(np.asarray(input_ids, np.int64), (batch, 1))  # image-major [B * Q, 16]
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids),
            pixel_values=torch.from_numpy(np.ascontiguousarray(pixel_values.transpose(0, 3, 1, 2))),
            attention_mask=torch.from_numpy((ids > 0).astype(np.int64)),
        )
    result = {
        "logits": out.logits.numpy(),
        "pred_boxes": out.pred_boxes.numpy(),
        "class_embeds": out.class_embeds.numpy(),
        "image_embeds": out.image_embeds.numpy(),
    }
    if getattr(out, "objectness_logits", None) is not None:
        result["objectness_logits"] = out.objectness_logits.numpy()
    return result


def random_queries(num: int, rng: np.random.Generator, context_length: int = 16) -> np.ndarray:
    """Token-id rows shaped like real queries: SOT, 1-10 random BPE ids, EOT, zero padding."""
    ids = np.zeros((num, context_length), np.int32)
    for i in range(num):
        n = int(rng.integers(1, 11))
        ids[i, 0] = 49406
        ids[i, 1 : n + 1] = rng.integers(1, 49406, n)
        ids[i, n + 1] = 49407
    return ids


def _clip_merges() -> list[str]:
    data = importlib.resources.files("owl").joinpath("assets", "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.decompress(data.read_bytes()).decode("utf-8").split("\n")
    return lines[1 : 1 + 48894]


def _gpt2_byte_chars() -> list[str]:
    """The byte->character table of the original CLIP/GPT-2 code, in its vocabulary order."""
    kept = list(range(ord("!"), ord("~") + 1))
    kept += list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(
        range(ord("\u00ae"), ord("\u00ff") + 1)
    )
    chars = [chr(b) for b in kept]
    extra = 0
    for b in range(256):
        if b not in kept:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_transformers_tokenizer(folder: str | Path, **kwargs: Any) -> Any:
    """transformers' CLIPTokenizer built offline from owl's BPE file.

    Lays the files out as the original CLIP -> transformers conversion did: vocab.json = byte
    tokens, byte tokens + "</w>", joined merges, SOT, EOT; merges.txt = "#version: 0.2" + merges.
    `kwargs` go to `from_pretrained` (the published OWL-ViT tokenizers add pad_token="!" and
    model_max_length=16, which also makes "!" a special token).
    """
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = _clip_merges()
    chars = _gpt2_byte_chars()
    vocab = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(
        json.dumps({symbol: i for i, symbol in enumerate(vocab)}), encoding="utf-8"
    )
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    return transformers.CLIPTokenizer.from_pretrained(str(folder), **kwargs)
