"""`ExportedModel`: an export folder opened as the Detector's encoders (the backend seam).

The Detector needs three things of a model: its `config`, `embed_image(pixels, features=False)`
(normalised pixels -> boxes, class embeddings, logit shift and scale, objectness) and
`embed_text(ids)` (token ids -> query embeddings). `OwlModel` gives them with JAX; this class
gives them from the exported graphs (ONNX Runtime or deserialised StableHLO), so preprocessing,
caches, thresholds, image queries, post-processing and writers stay the Detector's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from owl.export.manifest import ExportDirError, Manifest, read_manifest
from owl.models.configs import ModelConfig

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class ExportedModel:
    """The graphs of one export folder, with `OwlModel`'s encoder methods.

    Attributes:
      config: the architecture (from the manifest).
      manifest: the parsed manifest.
      source: the folder, for messages.
    """

    def __init__(self, directory: Path, manifest: Manifest, runners: dict[str, Runner]):
        self.directory = directory
        self.manifest = manifest
        self.config: ModelConfig = manifest.config
        self.source = str(directory)
        self.runners = runners

    def __repr__(self) -> str:
        return f"ExportedModel({self.manifest.format}, {self.config.family}, {self.source!r})"

    def embed_image(self, pixel_values: np.ndarray, *, features: bool = False) -> dict:
        """[B, S, S, 3] normalised pixels -> pred_boxes, class_embeddings (unnormalised),
        logit_shift, logit_scale and (OWLv2) objectness_logits, numpy, batch first.

        A graph exported with a fixed batch runs in chunks of that size, the last one padded.
        """
        if features:
            raise ValueError(
                "an exported image encoder has no feature map; use the JAX backend for features"
            )
        x = np.asarray(pixel_values, np.float32)
        size = self.config.image_size
        if x.ndim != 4 or x.shape[1:] != (size, size, 3):
            raise ValueError(f"pixel_values must be [B, {size}, {size}, 3], got {x.shape}")
        fixed = self.manifest.batch
        if fixed is None or len(x) == fixed:
            return self.runners["image_encoder"]({"pixel_values": x})
        parts = []
        for start in range(0, len(x), fixed):
            chunk = x[start : start + fixed]
            padded = np.zeros((fixed, *x.shape[1:]), np.float32)
            padded[: len(chunk)] = chunk
            out = self.runners["image_encoder"]({"pixel_values": padded})
            parts.append({k: v[: len(chunk)] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def embed_text(self, input_ids: np.ndarray) -> np.ndarray:
        """[N, L] token ids (L <= 16) -> unnormalised query embeddings [N, E].

        Ids are padded with 0 to the context length: attention is causal and the embedding is
        read at the end token, so trailing padding does not change it.
        """
        ids = np.asarray(input_ids)
        lead, length = ids.shape[:-1], ids.shape[-1]
        ctx = self.config.context_length
        if length > ctx:
            raise ValueError(f"input_ids have {length} tokens, more than the context of {ctx}")
        flat = np.zeros((int(np.prod(lead)), ctx), np.int64)
        flat[:, :length] = ids.reshape(-1, length)
        out = self.runners["text_encoder"]({"input_ids": flat})["query_embeddings"]
        return out.reshape(*lead, out.shape[-1])

    def score(
        self,
        class_embeddings: np.ndarray,
        logit_shift: np.ndarray,
        logit_scale: np.ndarray,
        query_embeddings: np.ndarray,
    ) -> np.ndarray:
        """Logits [B, P, Q] from the score graph (needs a folder written with it)."""
        if "score" not in self.runners:
            raise ValueError(f"{self.source} has no score graph")
        return self.runners["score"](
            {"class_embeddings": class_embeddings, "logit_shift": logit_shift,
             "logit_scale": logit_scale, "query_embeddings": query_embeddings}
        )["logits"]  # fmt: skip

    def score_image(
        self,
        class_embeddings: np.ndarray,
        logit_shift: np.ndarray,
        logit_scale: np.ndarray,
        query_embeddings: np.ndarray,
    ) -> np.ndarray:
        """Logits [P, Q] of one image ([P, E], [P], [P]) against queries [Q, E] (score graph).

        The Detector scores with this on an export backend, so it needs no JAX; a graph with a
        fixed batch gets the image in the first slot of a zero-padded batch.
        """
        b = self.manifest.batch or 1

        def batched(x: np.ndarray) -> np.ndarray:
            out = np.zeros((b, *np.shape(x)), np.float32)
            out[0] = x
            return out

        return self.score(
            batched(class_embeddings), batched(logit_shift), batched(logit_scale),
            np.asarray(query_embeddings, np.float32),
        )[0]  # fmt: skip

    @property
    def weights_sha256(self) -> str | None:
        """The exported weights' `params_sha256`, as the manifest records it (None: not recorded)."""
        return self.manifest.weights_sha256


def open_export(
    directory: str | os.PathLike, format: str | None = None, *, threads: int | None = None
) -> ExportedModel:
    """Opens an export folder written by `owl export`.

    Args:
      directory: the folder holding manifest.json and the graphs.
      format: "onnx" or "stablehlo" to insist on one (e.g. `--backend onnx`); None: any.
      threads: ONNX Runtime intra-op threads (None: its default).
    Raises:
      ExportDirError: a missing, corrupt or mismatched folder (one line, naming it).
      ImportError: onnxruntime is not installed (for an ONNX folder).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if format is not None and manifest.format != format:
        raise ExportDirError(
            f"{directory} holds a {manifest.format} export, not {format}; use --backend "
            f"{manifest.format}, or export again with --format {format}"
        )
    return load_graphs(directory, manifest, threads=threads)


def load_graphs(
    directory: Path, manifest: Manifest, *, threads: int | None = None
) -> ExportedModel:
    """Loads the graphs a manifest names (the manifest may not be written yet: see writer.py)."""
    if manifest.format == "onnx":
        from owl.export.onnx_files import load_onnx

        def load(path: Path, name: str) -> Runner:
            return load_onnx(path, threads)
    else:
        from owl.export.stablehlo import load_stablehlo as load

    runners = {}
    for name, graph in manifest.graphs.items():
        path = directory / graph["file"]
        try:
            runners[name] = load(path, name)
        except ValueError as e:
            raise ExportDirError(f"{path}: {e}; write the folder again with `owl export`") from None
    _check_signatures(directory, manifest, runners)
    return ExportedModel(directory, manifest, runners)


def _check_signatures(directory: Path, manifest: Manifest, runners: dict[str, Runner]) -> None:
    """The encoders' input sizes and outputs must be the manifest's model's."""
    _check_text_length(directory, manifest, runners["text_encoder"])
    c = manifest.config
    run = runners["image_encoder"]
    if hasattr(run, "session"):
        inputs = {i.name: i.shape for i in run.session.get_inputs()}
        outputs = {o.name: o.shape for o in run.session.get_outputs()}
        shape = inputs.get("pixel_values")
        emb = outputs.get("class_embeddings")
    else:
        shape = list(run.exported.in_avals[0].shape)
        emb = None
    want = ["objectness_logits"] if c.objectness else []
    missing = [k for k in want if hasattr(run, "session") and k not in outputs]
    if (
        shape is None
        or list(shape[1:]) != [c.image_size, c.image_size, 3]
        or missing
        or (emb is not None and list(emb[1:]) != [c.num_patches, c.embed_dim])
    ):
        raise ExportDirError(
            f"{directory}: the image_encoder graph does not match manifest.json (input "
            f"{shape}, model {c.family} {c.image_size}px); write the folder again with "
            "`owl export`"
        )


def _check_text_length(directory: Path, manifest: Manifest, run: Runner) -> None:
    """The text encoder must take exactly the manifest's context length of token ids.

    A StableHLO graph states its input shape. The ONNX graph takes [N, L] for any L up to the
    context length it was built with (its position table), so it is probed: L = context must run
    and L = context + 1 must not. One query each, a few milliseconds even at full size.
    """
    ctx = manifest.config.context_length
    if not hasattr(run, "session"):
        shape = list(run.exported.in_avals[0].shape)
        ok = shape[1:] == [ctx]
        got = f"input {shape}"
    else:
        import onnxruntime as ort

        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # the expected failure below must not print an ORT error

        def runs(length: int) -> bool:
            ids = np.zeros((1, length), np.int64)
            ids[0, :2] = (1, 2)
            try:
                run.session.run(None, {"input_ids": ids}, quiet)
            except Exception:  # onnxruntime raises its own exception types
                return False
            return True

        ok = runs(ctx) and not runs(ctx + 1)
        got = "a graph built for another length"
    if not ok:
        raise ExportDirError(
            f"{directory}: the text_encoder graph does not take the {ctx} tokens of "
            f"manifest.json's context_length ({got}); write the folder again with `owl export`"
        )


__all__ = ["ExportDirError", "ExportedModel", "load_graphs", "open_export"]
