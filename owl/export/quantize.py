"""int8 image encoders: ONNX Runtime dynamic quantization of the weight matrix products.

What is quantized: every MatMul whose second input is a weight (the attention's q/k/v and output
projections and the MLPs of every vision block; optionally the heads) gets int8 weights (one
scale per tensor, symmetric) and uint8 activations whose range is measured on each call
(`onnxruntime.quantization.quantize_dynamic`; ONNX Runtime fuses each into one
DynamicQuantizeMatMul, which uses VNNI dot products where the CPU has them). What stays float32:
the attention's score and value products (both inputs are activations), softmax, LayerNorm,
GELU, the patch convolution, and (by default) the three heads, which are a few percent of the
compute and set the boxes and scores directly. The text encoder is not quantized: it runs once
per query text and its output is cached. Which layers tolerate int8, measured on full-size
random weights, is in docs/export.md (benchmarks/quantize.py).

Why dynamic rather than static QDQ with calibration images: the agreement it gives needs no
calibration set (a static one fits its activation ranges to the images it saw), and on VNNI
CPUs the fused dynamic kernel already removes most of the f32 time. The manifest's
`calibration` record says exactly what was done and what agreement the export measured.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

# Groups of weight MatMuls, in graph order within each vision block, then the heads.
BLOCK_GROUPS = ("attention_qkv", "attention_out", "mlp_in", "mlp_out")
HEAD_GROUP = "heads"
DEFAULT_GROUPS = BLOCK_GROUPS  # the heads stay float32


def weight_matmuls(model: Any, config: Any) -> dict[str, list[str]]:
    """The image encoder's MatMul nodes with a constant weight, by group (see BLOCK_GROUPS).

    The graph builder (`onnx_graph.build_image_encoder`) emits, per vision block, the q/k/v
    product, the output projection, then the two MLP products, and after the tower the heads;
    so the position of a weight MatMul tells its group.
    """
    weights = {init.name for init in model.graph.initializer}
    produced_by_cast = {n.output[0] for n in model.graph.node if n.op_type == "Cast"}
    names = [
        n.name for n in model.graph.node
        if n.op_type == "MatMul" and (n.input[1] in weights or n.input[1] in produced_by_cast)
    ]  # fmt: skip
    tower = 4 * config.vision_layers
    groups: dict[str, list[str]] = {g: [] for g in (*BLOCK_GROUPS, HEAD_GROUP)}
    for i, name in enumerate(names):
        groups[BLOCK_GROUPS[i % 4] if i < tower else HEAD_GROUP].append(name)
    return groups


def quantize_image_encoder(
    source: Path, dest: Path, config: Any, groups: tuple[str, ...] = DEFAULT_GROUPS
) -> dict[str, Any]:
    """Writes the int8 image encoder `dest` from the float32 graph `source`.

    Args:
      source, dest: .onnx files (dest may not be source).
      config: the model's `ModelConfig` (for the group boundaries).
      groups: which weight MatMul groups to quantize (BLOCK_GROUPS and/or "heads").
    Returns:
      What was done, for the manifest's calibration record.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(str(source))
    found = weight_matmuls(proto, config)
    unknown = sorted(set(groups) - set(found))
    if unknown:
        raise ValueError(f"unknown int8 groups {', '.join(unknown)}; use {', '.join(found)}")
    nodes = [n for g in groups for n in found[g]]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a generic "consider pre-processing" warning
    try:
        quantize_dynamic(
            source, dest, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes, per_channel=False,
            # DefaultTensorType: ONNX's shape inference gives no type past the contrib
            # MultiHeadAttention node; every float of these graphs is float32.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )  # fmt: skip
    finally:
        root.setLevel(level)
    return {
        "method": "dynamic: int8 weights (symmetric, one scale per tensor); uint8 activations "
        "whose range is measured on every call, so no calibration images are needed",
        "tool": "onnxruntime.quantization.quantize_dynamic",
        "graphs": {"image_encoder": "int8", "text_encoder": "f32", "score": "f32"},
        "quantized": {g: len(found[g]) for g in groups},
        "float32": [
            *(f"{g} ({len(found[g])} MatMuls)" for g in found if g not in groups),
            "attention scores and values",
            "softmax",
            "LayerNorm",
            "GELU",
            "patch convolution",
        ],
    }


__all__ = [
    "BLOCK_GROUPS",
    "DEFAULT_GROUPS",
    "HEAD_GROUP",
    "quantize_image_encoder",
    "weight_matmuls",
]
