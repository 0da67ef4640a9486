"""Conversions of official model artefacts into the files the engine runs.

EdgeFace-XS is released by its authors only as an int8 dynamic-quantized PyTorch checkpoint
(`edgeface_xs_q.pt`); onnxruntime runs the float32 ONNX export of the same weights. Needs the
`convert` extra (timm, onnx) and torch; imported only when a conversion actually runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

EDGEFACE_INPUT = "input"
EDGEFACE_OUTPUT = "embedding"
EDGEFACE_OPSET = 17


class ConversionUnavailable(RuntimeError):
    """The packages a conversion needs are not installed."""


def _require_convert_extra() -> tuple[ModuleType, ModuleType]:
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise ConversionUnavailable(
            f"converting needs {exc.name}: pip install 'castfinder[convert]'"
        ) from exc
    import timm
    import torch

    return torch, timm


EDGEFACE_DIM = 512  # EdgeFace's embedding size: the head the checkpoint was trained with


def _edgeface_wrapper(timm: ModuleType) -> torch.nn.Module:
    import torch as torch_  # installed: _require_convert_extra checked

    # EdgeFace's TimmFRWrapperV2: timm's EdgeNeXt-x-small with a 512-d head, held as `.model`
    # (the checkpoint's keys start with "model.").
    class TimmFRWrapperV2(torch_.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = timm.create_model("edgenext_x_small", pretrained=False)
            self.model.reset_classifier(EDGEFACE_DIM)

        def forward(self, x: torch_.Tensor) -> torch_.Tensor:
            return self.model(x)

    return TimmFRWrapperV2()


def load_edgeface_float(checkpoint: Path) -> torch.nn.Module:
    """EdgeFace-XS with the int8 Linear weights of `checkpoint` dequantized to float32."""
    torch, timm = _require_convert_extra()
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notices about quantized tensors
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        quantized = torch.ao.quantization.quantize_dynamic(
            _edgeface_wrapper(timm), {torch.nn.Linear}, dtype=torch.qint8)
    try:
        quantized.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConversionUnavailable(
            f"{checkpoint.name} does not fit timm {timm.__version__}'s edgenext_x_small "
            f"(tested with timm 1.0.3-1.0.31): {str(exc).splitlines()[0]}"
        ) from exc

    floats: dict[str, object] = {}
    for name, module in quantized.named_modules():
        if isinstance(module, DynamicLinear):
            floats[f"{name}.weight"] = module.weight().dequantize()
            bias = module.bias()
            if bias is not None:
                floats[f"{name}.bias"] = bias.detach()
    for key, value in quantized.state_dict().items():
        # Quantized Linear layers appear as packed params (+ scale / zero_point); taken above.
        if "._packed_params" in key or key.endswith((".scale", ".zero_point")):
            continue
        floats[key] = value
    model = _edgeface_wrapper(timm)
    model.load_state_dict(floats, strict=True)
    return model.eval()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def edgeface_to_onnx(checkpoint: Path, output: Path) -> None:
    """Export EdgeFace-XS from its official checkpoint to ONNX (opset 17): `input` N×3×112×112
    (RGB, aligned, (px-127.5)/127.5), `embedding` N×512 (not normalised). Writes `output`
    directly; the caller writes to a temporary name and renames it into place."""
    torch, timm = _require_convert_extra()
    try:
        import onnx
    except ImportError as exc:
        raise ConversionUnavailable("converting needs onnx: pip install 'castfinder[convert]'") from exc

    model = load_edgeface_float(checkpoint)
    log.info("converting %s to ONNX (timm %s, torch %s)", checkpoint.name, timm.__version__, torch.__version__)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # The TorchScript-based exporter: no onnxscript needed, and it gives the same graph as the
        # reference export (edgeface_xs_q_fp32.onnx).
        torch.onnx.export(
            model, (torch.zeros(1, 3, 112, 112),), str(output),
            input_names=[EDGEFACE_INPUT], output_names=[EDGEFACE_OUTPUT],
            dynamic_axes={EDGEFACE_INPUT: {0: "batch"}, EDGEFACE_OUTPUT: {0: "batch"}},
            opset_version=EDGEFACE_OPSET, dynamo=False,
        )
    proto = onnx.load(str(output))
    provenance = {
        "source": f"EdgeFace (Idiap) checkpoint {checkpoint.name}, sha256 {_sha256(checkpoint)}",
        "derivation": (f"int8 dynamic-quantized Linear weights dequantized to float32 and loaded into timm "
                       f"{timm.__version__} edgenext_x_small with a 512-d head (EdgeFace TimmFRWrapperV2); "
                       f"exported by castfinder with torch {torch.__version__} (opset {EDGEFACE_OPSET}). "
                       "No retraining."),
        "preprocessing": "RGB face aligned to the ArcFace 5-point template at 112x112; (pixel-127.5)/127.5; NCHW",
        "output": "512-d embedding, not normalised: L2-normalise and compare by cosine",
        "license": "EdgeFace repository: BSD-3-Clause; weights trained on WebFace: treat as non-commercial",
    }
    del proto.metadata_props[:]
    for key, value in provenance.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(output))
    log.debug("wrote %s: %s", output, json.dumps(provenance))
