"""ONNX graphs of owl's three inference stages, built from the known architecture with `onnx`.

Why built by hand rather than traced by a converter (jax2onnx): the architecture is small and
fixed (a CLIP ViT, a CLIP text transformer, three heads), so writing it out op by op is a few
hundred lines that mirror `owl.models.clip` and `owl.models.owl_vit` one to one, and every
export is verified against owl to 1e-4 (`owl.export.verify`). It needs only `onnx` (graph
building) at export time and `onnxruntime` to run, and sits beside owl's pinned JAX/Flax/orbax
without conflicts; jax2onnx 0.17.1 declares orbax-checkpoint<0.11.37 (owl's [train] pins
0.12.8) and pulls in equinox, netron, huggingface-hub and orbax-export. See docs/export.md.

The graphs, each self-contained (weights are initializers):
  image_encoder: pixel_values f32 [B, S, S, 3] (CLIP-normalised, NHWC as owl) ->
    pred_boxes [B, P, 4], class_embeddings [B, P, E] (unnormalised), logit_shift [B, P],
    logit_scale [B, P] (already elu + 1), objectness_logits [B, P] (OWLv2 only);
  text_encoder: input_ids int64 [N, L] (L <= 16, 0 = padding) -> query_embeddings [N, E];
  score: class_embeddings, logit_shift, logit_scale, query_embeddings [Q, E] -> logits [B, P, Q].

The image tower's attention is ONNX Runtime's `com.microsoft.MultiHeadAttention` contrib operator
(a blocked kernel: faster, and the [B, H, N, N] scores never exist), so the image encoder runs on
ONNX Runtime; every other node is a standard ONNX operator.

Numerics follow owl (not transformers): LayerNorm eps 1e-5 in the towers and 1e-6 on the merged
class token, QuickGELU in the towers, tanh-GELU in the box/objectness MLPs, masked attention
scores set to float32's lowest value (as Flax), norms with +1e-6.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from owl.models.clip import LN_EPSILON
from owl.models.configs import ModelConfig
from owl.models.owl_vit import MERGE_LN_EPSILON, NORM_EPSILON, compute_box_bias

OPSET = 17  # LayerNormalization; onnxruntime >= 1.14 runs it
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib operators (MultiHeadAttention)
F32_LOWEST = float(np.finfo(np.float32).min)


class _Graph:
    """A tiny builder: unique names, initializers from numpy, nodes appended in order."""

    def __init__(self, weight_dtype: Any = np.float32):
        import onnx

        self.onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.weight_dtype = np.dtype(weight_dtype)
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, value: Any, base: str = "c", *, dtype: Any = None) -> str:
        """A constant: small ones (and non-float ones) exact; weights stored as `weight_dtype`."""
        from onnx import numpy_helper

        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)  # every float of the graphs is float32
        name = self.name(base)
        if arr.dtype == np.float32 and self.weight_dtype != np.float32 and arr.size >= 1024:
            stored = self.name(base + "_stored")
            self.initializers.append(numpy_helper.from_array(arr.astype(self.weight_dtype), stored))
            self.op("Cast", [stored], to=self.onnx.TensorProto.FLOAT, out=name)
        else:
            self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], *, out: str | None = None, **attrs: Any) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def ops(self, op_type: str, inputs: list[str], n: int, **attrs: Any) -> list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n)]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outs, name=outs[0], **attrs))
        return outs

    # -- layers ----------------------------------------------------------------------------------

    def dense(self, x: str, p: dict, kernel_shape: tuple[int, int] | None = None) -> str:
        kernel = np.asarray(p["kernel"], np.float32)
        if kernel_shape is not None:
            kernel = kernel.reshape(kernel_shape)
        y = self.op("MatMul", [x, self.const(kernel, "kernel")])
        if "bias" in p:
            y = self.op("Add", [y, self.const(np.asarray(p["bias"], np.float32).reshape(-1))])
        return y

    def layer_norm(self, x: str, p: dict, epsilon: float) -> str:
        scale = self.const(np.asarray(p["scale"], np.float32), "ln_scale")
        bias = self.const(np.asarray(p["bias"], np.float32), "ln_bias")
        return self.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=epsilon)

    def quick_gelu(self, x: str) -> str:
        return self.op("Mul", [x, self.op("Sigmoid", [self.op("Mul", [x, self.const(1.702)])])])

    def tanh_gelu(self, x: str) -> str:
        """x * 0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))), as jax.nn.gelu(approximate)."""
        cube = self.op("Mul", [self.op("Mul", [x, x]), x])
        inner = self.op("Add", [x, self.op("Mul", [cube, self.const(np.float32(0.044715))])])
        t = self.op("Tanh", [self.op("Mul", [inner, self.const(np.float32(np.sqrt(2 / np.pi)))])])
        cdf = self.op("Mul", [self.op("Add", [t, self.const(np.float32(1.0))]), self.const(0.5)])
        return self.op("Mul", [x, cdf])

    def attention(self, x: str, p: dict, heads: int, mask: str | None) -> str:
        """Flax MultiHeadDotProductAttention (self-attention), softmax over all keys.

        Without a mask (the image tower) it is ONNX Runtime's `com.microsoft.MultiHeadAttention`
        (scale 1/sqrt(depth), as here), whose CPU kernel works in blocks with an online softmax,
        as owl's JAX attention does: at OWLv2's 3601 tokens it was 0.22 s a layer against 0.28 s,
        in 151 MB against 763 MB, for the plain MatMul-Softmax-MatMul (docs/export.md). With a
        mask (the text tower's causal one, 16 tokens) it is the plain form."""
        width = np.asarray(p["query"]["kernel"]).shape[0]
        depth = width // heads
        qkv_kernel = np.concatenate(
            [np.asarray(p[k]["kernel"], np.float32).reshape(width, width) for k in ("query", "key", "value")],
            axis=1,
        )  # fmt: skip
        qkv_bias = np.concatenate(
            [np.asarray(p[k]["bias"], np.float32).reshape(-1) for k in ("query", "key", "value")]
        )
        qkv = self.dense(x, {"kernel": qkv_kernel, "bias": qkv_bias})  # [B, N, 3W]
        if mask is None:  # ONNX Runtime's fused kernel: blocked, never the [B, H, N, N] scores
            q, k, v = self.ops("Split", [qkv, self.const(np.array([width] * 3, np.int64))], 3,
                               axis=-1)  # fmt: skip
            y = self.op("MultiHeadAttention", [q, k, v], num_heads=heads, domain=MS_DOMAIN)
            return self.dense(y, p["out"], (width, width))
        qkv = self.op("Reshape", [qkv, self.const(np.array([0, 0, 3, heads, depth], np.int64))])
        qkv = self.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # [3, B, H, N, D]
        q, k, v = (
            self.op("Gather", [qkv, self.const(np.int64(i))], axis=0) for i in range(3)
        )  # fmt: skip
        q = self.op("Mul", [q, self.const(np.float32(1.0 / np.sqrt(depth)))])
        scores = self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])])
        if mask is not None:
            scores = self.op("Where", [mask, scores, self.const(np.float32(F32_LOWEST))])
        probs = self.op("Softmax", [scores], axis=-1)
        y = self.op("Transpose", [self.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        y = self.op("Reshape", [y, self.const(np.array([0, 0, width], np.int64))])
        return self.dense(y, p["out"], (width, width))

    def transformer(self, x: str, p: dict, layers: int, heads: int, mask: str | None) -> str:
        for i in range(layers):
            b = p[f"resblocks_{i}"]
            x = self.op(
                "Add", [x, self.attention(self.layer_norm(x, b["ln_0"], LN_EPSILON), b["attn"], heads, mask)]
            )  # fmt: skip
            h = self.dense(self.layer_norm(x, b["ln_1"], LN_EPSILON), b["mlp"]["c_fc"])
            x = self.op("Add", [x, self.dense(self.quick_gelu(h), b["mlp"]["c_proj"])])
        return x

    def mlp_head(self, x: str, p: dict, num_layers: int = 3) -> str:
        for i in range(num_layers - 1):
            x = self.tanh_gelu(self.dense(x, p[f"Dense_{i}"]))
        return self.dense(x, p[f"Dense_{num_layers - 1}"])

    def squeeze_last(self, x: str) -> str:
        return self.op("Squeeze", [x, self.const(np.array([-1], np.int64))])

    def model(self, inputs: list[Any], outputs: list[Any], name: str) -> Any:
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET)]
        if any(n.domain == MS_DOMAIN for n in self.nodes):
            opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="owl")
        model.ir_version = min(model.ir_version, 9)  # readable by onnxruntime >= 1.16
        return model


def _value(name: str, elem: int, shape: list[Any]) -> Any:
    import onnx

    return onnx.helper.make_tensor_value_info(name, elem, shape)


def build_image_encoder(
    config: ModelConfig, params: dict, *, batch: int | None = None, weight_dtype: Any = np.float32
) -> Any:
    """The image encoder as an ONNX ModelProto (see the module docstring for inputs/outputs)."""
    import onnx

    f32 = onnx.TensorProto.FLOAT
    g = _Graph(weight_dtype)
    c = config
    visual = params["backbone"]["clip"]["visual"]
    s, ps, w = c.image_size, c.patch_size, c.vision_width
    grid = s // ps
    b = batch if batch is not None else "batch"

    # Patch embedding: NHWC -> NCHW, Conv with stride p (S is a multiple of p: SAME adds nothing).
    x = g.op("Transpose", ["pixel_values"], perm=[0, 3, 1, 2])
    kernel = np.asarray(visual["conv1"]["kernel"], np.float32).transpose(3, 2, 0, 1)  # [W,3,p,p]
    x = g.op("Conv", [x, g.const(kernel, "conv1")], kernel_shape=[ps, ps], strides=[ps, ps])
    x = g.op("Reshape", [x, g.const(np.array([0, w, grid * grid], np.int64))])
    x = g.op("Transpose", [x], perm=[0, 2, 1])  # [B, P, W], row-major patches
    batch_dim = g.op("Shape", [x], start=0, end=1)
    cls_shape = g.op("Concat", [batch_dim, g.const(np.array([1, w], np.int64))], axis=0)
    cls = g.op(
        "Expand",
        [g.const(np.asarray(visual["class_embedding"], np.float32).reshape(1, 1, w), "cls"), cls_shape],
    )  # fmt: skip
    x = g.op("Concat", [cls, x], axis=1)
    posemb = np.asarray(visual["positional_embedding"], np.float32)
    native = c.posemb_grid_size
    if native != grid:  # posemb truncation (spec §1.12), as VisionTransformer does
        block = posemb[1:].reshape(native, native, w)[:grid, :grid].reshape(grid * grid, w)
        posemb = np.concatenate([posemb[:1], block], axis=0)
    x = g.op("Add", [x, g.const(posemb[None], "posemb")])
    x = g.layer_norm(x, visual["ln_pre"], LN_EPSILON)
    x = g.transformer(x, visual["transformer"], c.vision_layers, c.vision_heads, None)
    tokens = g.layer_norm(x, visual["ln_post"], LN_EPSILON)

    # Class-token merge and heads (owl_vit.ImageTextEmbedder.embed_image, OwlViT.embed_image).
    def tokens_slice(start: int, end: int) -> str:
        return g.op(
            "Slice",
            [tokens, g.const(np.array([start], np.int64)), g.const(np.array([end], np.int64)),
             g.const(np.array([1], np.int64))],
        )  # fmt: skip

    merged = g.op("Mul", [tokens_slice(1, grid * grid + 1), tokens_slice(0, 1)])
    feats = g.layer_norm(merged, params["backbone"]["merged_class_token"], MERGE_LN_EPSILON)

    box = g.mlp_head(feats, params["obj_box_head"])
    box = g.op("Add", [box, g.const(compute_box_bias(grid, grid), "box_bias")])
    g.op("Sigmoid", [box], out="pred_boxes")
    head = params["class_head"]
    g.op("Identity", [g.dense(feats, head["Dense_0"])], out="class_embeddings")
    g.op("Identity", [g.squeeze_last(g.dense(feats, head["logit_shift"]))], out="logit_shift")
    scale = g.op("Elu", [g.squeeze_last(g.dense(feats, head["logit_scale"]))], alpha=1.0)
    g.op("Add", [scale, g.const(np.float32(1.0))], out="logit_scale")
    p, e = grid * grid, c.embed_dim
    outputs = [
        _value("pred_boxes", f32, [b, p, 4]),
        _value("class_embeddings", f32, [b, p, e]),
        _value("logit_shift", f32, [b, p]),
        _value("logit_scale", f32, [b, p]),
    ]
    if c.objectness:
        g.op("Identity", [g.squeeze_last(g.mlp_head(feats, params["objectness_head"]))],
             out="objectness_logits")  # fmt: skip
        outputs.append(_value("objectness_logits", f32, [b, p]))
    inputs = [_value("pixel_values", f32, [b, s, s, 3])]
    return g.model(inputs, outputs, "owl_image_encoder")


def build_text_encoder(config: ModelConfig, params: dict, *, weight_dtype: Any = np.float32) -> Any:
    """The text encoder as an ONNX ModelProto: input_ids int64 [N, L] -> query_embeddings [N, E]."""
    import onnx

    g = _Graph(weight_dtype)
    c = config
    text = params["backbone"]["clip"]["text"]
    length = g.op("Shape", ["input_ids"], start=1, end=2)  # [1]: L, at most the context length
    zero, one = g.const(np.array([0], np.int64)), g.const(np.array([1], np.int64))
    table = g.const(np.asarray(text["token_embedding"]["embedding"], np.float32), "token_embedding")
    x = g.op("Gather", [table, "input_ids"], axis=0)  # [N, L, W]
    posemb = g.const(np.asarray(text["positional_embedding"], np.float32), "posemb")
    x = g.op("Add", [x, g.op("Slice", [posemb, zero, length, zero])])

    # Causal AND key-valid AND query-valid (clip.text_attention_mask) -> [N, 1, L, L].
    causal = np.tril(np.ones((c.context_length, c.context_length), bool))
    axes01 = g.const(np.array([0, 1], np.int64))
    causal = g.op("Slice", [g.const(causal, "causal"), g.op("Concat", [zero, zero], axis=0),
                            g.op("Concat", [length, length], axis=0), axes01])  # fmt: skip
    valid = g.op("Greater", ["input_ids", g.const(np.int64(0))])  # [N, L]
    keys = g.op("Unsqueeze", [valid, one])  # [N, 1, L]
    queries = g.op("Unsqueeze", [valid, g.const(np.array([2], np.int64))])  # [N, L, 1]
    mask = g.op("And", [g.op("And", [causal, keys]), queries])
    mask = g.op("Unsqueeze", [mask, one])
    x = g.transformer(x, text["transformer"], c.text_layers, c.text_heads, mask)
    x = g.layer_norm(x, text["ln_final"], LN_EPSILON)
    end = g.op("ArgMax", ["input_ids"], axis=-1, keepdims=1)  # [N, 1]: the end token
    pooled = g.op("GatherND", [x, end], batch_dims=1)  # [N, W]
    g.op("Identity", [g.dense(pooled, text["text_projection"])], out="query_embeddings")
    i64, f32 = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    return g.model(
        [_value("input_ids", i64, ["num_queries", "length"])],
        [_value("query_embeddings", f32, ["num_queries", c.embed_dim])],
        "owl_text_encoder",
    )


def build_score(config: ModelConfig, *, batch: int | None = None) -> Any:
    """The scoring graph: logits [B, P, Q] = (cos(class emb, query emb) + shift) * scale.

    Both embeddings are normalised as v / (|v| + 1e-6) (owl_vit.normalize), so it takes the image
    encoder's and the text encoder's outputs as they are.
    """
    import onnx

    g = _Graph()
    eps = g.const(np.float32(NORM_EPSILON))

    def normalize(x: str) -> str:
        norm = g.op("ReduceL2", [x], axes=[-1], keepdims=1)  # opset 17: axes is an attribute
        return g.op("Div", [x, g.op("Add", [norm, eps])])

    ce = normalize("class_embeddings")
    q = g.op("Transpose", [normalize("query_embeddings")], perm=[1, 0])  # [E, Q]
    cos = g.op("MatMul", [ce, q])
    unsq = g.const(np.array([-1], np.int64))
    shifted = g.op("Add", [cos, g.op("Unsqueeze", ["logit_shift", unsq])])
    g.op("Mul", [shifted, g.op("Unsqueeze", ["logit_scale", unsq])], out="logits")
    f32 = onnx.TensorProto.FLOAT
    b, p, e = (batch if batch is not None else "batch"), config.num_patches, config.embed_dim
    return g.model(
        [
            _value("class_embeddings", f32, [b, p, e]),
            _value("logit_shift", f32, [b, p]),
            _value("logit_scale", f32, [b, p]),
            _value("query_embeddings", f32, ["num_queries", e]),
        ],
        [_value("logits", f32, [b, p, "num_queries"])],
        "owl_score",
    )


BUILDERS: dict[str, Callable[..., Any]] = {
    "image_encoder": build_image_encoder,
    "text_encoder": build_text_encoder,
    "score": build_score,
}

__all__ = ["OPSET", "build_image_encoder", "build_score", "build_text_encoder"]
