"""Writing the ONNX graphs into an export folder, and running them with ONNX Runtime.

Graphs of 64 MiB or more (every full-size tower) keep their weights in a side file
(`NAME.onnx.data`, ONNX external data): ONNX Runtime maps that file into memory instead of
parsing the weights out of the protobuf and copying them, which took OWLv2 B/16's image encoder
from 1.53 to 1.31 GB at its peak (and keeps L/14 towers under protobuf's 2 GiB limit). Small
graphs (shapes-tiny, the score graph) are one file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from owl.models.configs import ModelConfig

EXTERNAL_DATA_BYTES = 64 << 20  # 64 MiB


def write_onnx(
    config: ModelConfig, params: Any, directory: Path, batch: int | None, weight_dtype: Any
) -> dict:
    """Builds and writes the three graphs; returns graph name -> its manifest entry."""
    import onnx

    from owl.export.onnx_graph import build_image_encoder, build_score, build_text_encoder
    from owl.files import atomic_path

    graphs = {
        "image_encoder": build_image_encoder(
            config, params, batch=batch, weight_dtype=weight_dtype
        ),
        "text_encoder": build_text_encoder(config, params, weight_dtype=weight_dtype),
        "score": build_score(config, batch=batch),
    }
    entries = {}
    for name, proto in graphs.items():
        file = f"{name}.onnx"
        external = proto.ByteSize() >= EXTERNAL_DATA_BYTES
        if proto.ByteSize() < 2**31 - 1:  # the checker refuses protos over 2 GiB
            onnx.checker.check_model(proto)
        with atomic_path(directory / file) as tmp:
            if external:
                onnx.save_model(proto, tmp, save_as_external_data=True,
                                location=f"{file}.data", all_tensors_to_one_file=True)  # fmt: skip
            else:
                onnx.save_model(proto, tmp)
        entries[name] = {
            "file": file,
            "inputs": {v.name: _value_info(v) for v in proto.graph.input},
            "outputs": {v.name: _value_info(v) for v in proto.graph.output},
        }
    return entries


def _value_info(v: Any) -> dict[str, Any]:
    import onnx

    t = v.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
    return {"dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}


def load_onnx(
    path: Path, threads: int | None = None
) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A runner for one ONNX graph on ONNX Runtime's CPU provider.

    Args:
      path: the .onnx file.
      threads: intra-op threads (None: ONNX Runtime's default, one per core).
    Raises:
      ValueError: onnxruntime cannot load the file (the first line of its reason).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own exception types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"not a graph ONNX Runtime can load ({reason[:200]})") from None
    names = [o.name for o in session.get_outputs()]
    dtypes = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in session.get_inputs()}

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(inputs[k], dtype=d) for k, d in dtypes.items()}
        return dict(zip(names, session.run(names, feed), strict=True))

    run.session = session
    return run


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}

__all__ = ["load_onnx", "write_onnx"]
