"""Serialised StableHLO of owl's inference stages, through `jax.export`, and their loader.

Each graph is owl's own jitted stage (`OwlModel`'s image encoder without the feature map, its
text encoder, and `score_queries`) with the parameters closed over as constants, exported with
`jax.export.export` and written with `Exported.serialize()`. A symbolic batch dimension ("b")
makes the batch dynamic; the text encoder takes [n, 16] token ids (n dynamic). Loading is
`jax.export.deserialize` and `Exported.call`, so any JAX (or a StableHLO consumer reading the
module in `Exported.mlir_module_serialized`) runs them without owl's model code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from owl.models.model import OwlModel
from owl.models.owl_vit import normalize, score_queries


def stage_functions(model: OwlModel, params: Any) -> dict[str, Callable[..., Any]]:
    """The three stages as functions of their inputs only, with `params` closed over.

    `params` may be stored in bfloat16: it is cast to float32 inside, so the exported module
    holds bfloat16 constants and computes in float32.
    """

    def f32(p: Any) -> Any:
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x).astype(jnp.float32), p)

    # Each stage closes over only the parameters it reads, so each file holds only its weights.
    clip = params["backbone"]["clip"]
    image_params = {
        **{k: v for k, v in params.items() if k != "backbone"},
        "backbone": {
            **params["backbone"],
            "clip": {"visual": clip["visual"], "logit_scale": clip["logit_scale"]},
        },
    }
    text_params = {"backbone": {"clip": {"text": clip["text"], "logit_scale": clip["logit_scale"]}}}

    def image_encoder(pixel_values: jax.Array) -> dict[str, jax.Array]:
        return model._embed_image_heads(f32(image_params), pixel_values)

    def text_encoder(input_ids: jax.Array) -> dict[str, jax.Array]:
        return {"query_embeddings": model._embed_text(f32(text_params), input_ids)}

    def score(class_embeddings, logit_shift, logit_scale, query_embeddings) -> dict[str, jax.Array]:
        logits = score_queries(
            normalize(class_embeddings), logit_shift, logit_scale, query_embeddings
        )
        return {"logits": logits}

    return {"image_encoder": image_encoder, "text_encoder": text_encoder, "score": score}


def input_specs(model: OwlModel, batch: int | None) -> dict[str, list[jax.ShapeDtypeStruct]]:
    """Abstract inputs of each stage; a None batch becomes the symbolic dimension "b"."""
    from jax import export

    c = model.config
    symbolic_b, n, q = export.symbolic_shape("b, n, q")  # one scope for all three
    b = symbolic_b if batch is None else batch
    f32 = jnp.float32
    p, e = c.num_patches, c.embed_dim
    return {
        "image_encoder": [jax.ShapeDtypeStruct((b, c.image_size, c.image_size, 3), f32)],
        "text_encoder": [jax.ShapeDtypeStruct((n, c.context_length), jnp.int32)],
        "score": [
            jax.ShapeDtypeStruct((b, p, e), f32),
            jax.ShapeDtypeStruct((b, p), f32),
            jax.ShapeDtypeStruct((b, p), f32),
            jax.ShapeDtypeStruct((q, e), f32),
        ],
    }


def write_stablehlo(model: OwlModel, params: Any, directory: Path, batch: int | None) -> dict:
    """Exports the three stages into `directory`; returns graph name -> its manifest entry."""
    from jax import export

    from owl.files import atomic_write

    specs = input_specs(model, batch)
    entries = {}
    for name, fn in stage_functions(model, params).items():
        exported = export.export(jax.jit(fn))(*specs[name])
        file = f"{name}.stablehlo"
        with atomic_write(directory / file, "wb") as f:
            f.write(exported.serialize())
        entries[name] = {
            "file": file,
            "inputs": _describe(exported.in_avals, _INPUT_NAMES[name]),
            "outputs": _describe(exported.out_avals, _output_names(exported)),
        }
    return entries


_INPUT_NAMES = {
    "image_encoder": ["pixel_values"],
    "text_encoder": ["input_ids"],
    "score": ["class_embeddings", "logit_shift", "logit_scale", "query_embeddings"],
}


def _output_names(exported: Any) -> list[str]:
    # The outputs are dicts; their flattened order is the sorted keys.
    tree = jax.tree_util.tree_unflatten(exported.out_tree, list(range(len(exported.out_avals))))
    return sorted(tree, key=lambda k: tree[k])


def _describe(avals: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    return {
        n: {"dtype": str(a.dtype), "shape": [d if isinstance(d, int) else str(d) for d in a.shape]}
        for n, a in zip(names, avals, strict=True)
    }


def load_stablehlo(
    path: Path, name: str
) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A runner for one serialised stage: {input name: array} -> {output name: numpy array}.

    Raises:
      ValueError: the file is not a serialised `jax.export` module.
    """
    import jax
    from jax import export

    try:
        exported = export.deserialize(bytearray(path.read_bytes()))
    except Exception as e:  # the deserialiser raises assorted errors on bad bytes
        # jax.export reads modules of older JAX releases, not always of newer ones.
        raise ValueError(
            f"not a serialised jax.export module that jax {jax.__version__} can read "
            f"({type(e).__name__}; a folder written by a newer jax needs that jax, or export "
            "it again with this one)"
        ) from None
    names = _INPUT_NAMES[name]
    dtypes = [a.dtype for a in exported.in_avals]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [np.asarray(inputs[n], dtype=d) for n, d in zip(names, dtypes, strict=True)]
        return {k: np.asarray(v) for k, v in exported.call(*args).items()}

    run.exported = exported  # for callers that check shapes
    return run


__all__ = ["input_specs", "load_stablehlo", "stage_functions", "write_stablehlo"]
