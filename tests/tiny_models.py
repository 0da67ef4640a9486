"""Random embedding models built from configs and saved the way a Hugging Face repo is laid out
(config, weights, image processor), so that the product's real loading code reads them. Nothing is
downloaded.

"tiny" is what the tests and the latency benchmarks use: it loads and runs in milliseconds.
"full" is the real architecture (DINOv2-small, CLIP ViT-B/16) with random weights, for measuring
the cost of a forward pass, which does not depend on the weights.

The weights come from a fixed seed, on a private random stream: a test that asserts a ranking
sees the same model whichever tests ran before it, and building one leaves the caller's torch
random state as it was.

The benchmarks import this module with the repository root on sys.path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Size = Literal["tiny", "full"]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def save_dinov2(path: Path, size: Size = "tiny", *, seed: int = 0) -> Path:
    """A random DINOv2 in `path`: 32-d tiny (56 px crops), or DINOv2-small's 384-d shape (224 px)."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    if size == "full":
        config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                              image_size=518, patch_size=14)
        shortest_edge, crop = 256, 224
    else:
        config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              image_size=56, patch_size=14)
        shortest_edge, crop = 64, 56
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Dinov2Model(config).save_pretrained(path)
    BitImageProcessor(size={"shortest_edge": shortest_edge}, crop_size={"height": crop, "width": crop},
                      do_center_crop=True, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).save_pretrained(path)
    return path


def save_clip(path: Path, size: Size = "tiny", *, seed: int = 0) -> Path:
    """A random CLIP vision tower with its projection in `path`: 24-d tiny (32 px), or ViT-B/16's
    512-d shape (224 px)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    if size == "full":
        config = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                  num_attention_heads=12, image_size=224, patch_size=16, projection_dim=512)
    else:
        config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, image_size=32, patch_size=8, projection_dim=24)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPVisionModelWithProjection(config).save_pretrained(path)
    side = config.image_size
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(path)
    return path
