"""`Detections`: the result of detecting objects in one image, as numpy arrays.

Named like supervision's ``sv.Detections`` so that people who know one know the other; unlike it,
this one is immutable (frozen, arrays read-only, mappings read-only) and every operation returns a
new object. NMS maths lives in `owl.ops.boxes`; file writers live in `owl.inference.outputs`.

JSON form of one image (`Detections.to_dict`; `owl.inference.outputs.write_json` wraps a list of
them as ``{"version": 1, "results": [...]}``)::

    {
      "image": {"path": "cat.jpg", "width": 640, "height": 480},   # the metadata; any keys
      "detections": [
        {
          "box": [x0, y0, x1, y1],    # pixels in the original image, x right, y down
          "score": 0.87,              # confidence in [0, 1]
          "label": "a cat",           # the query text (or an image query's name)
          "query_index": 0,           # index of the query in the request (class_id)
          "data": {"objectness": 0.9} # optional per-detection extras
        }
      ]
    }
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np


class Detection(NamedTuple):
    """One detection, as yielded by iterating over `Detections`."""

    xyxy: np.ndarray
    confidence: float
    class_id: int
    label: str
    data: dict[str, Any]


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class Detections:
    """Detections in one image.

    Attributes:
        xyxy: float32 [N, 4] boxes (x0, y0, x1, y1) in original-image pixels.
        confidence: float32 [N] scores in [0, 1].
        class_id: int64 [N] index of the query that produced each detection.
        labels: str [N] the query text (or name) of each detection.
        data: per-detection extras, each an array with N rows (e.g. "objectness").
        metadata: about the image as a whole (e.g. "path", "width", "height").
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    labels: np.ndarray
    data: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = _as_array(self.xyxy, np.float32, "xyxy")
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must have shape [N, 4], got {xyxy.shape}.")
        n = len(xyxy)
        confidence = _as_array(self.confidence, np.float32, "confidence")
        class_id = np.asarray(self.class_id)
        if class_id.size == 0:
            class_id = class_id.astype(np.int64)
        if not np.issubdtype(class_id.dtype, np.integer):
            raise ValueError(f"class_id must hold integers, got dtype {class_id.dtype}.")
        class_id = class_id.astype(np.int64)
        labels = np.array(self.labels, dtype=np.str_)
        for name, value in (("confidence", confidence), ("class_id", class_id), ("labels", labels)):
            if value.shape != (n,):
                raise ValueError(f"{name} must have shape [{n}] to match xyxy, got {value.shape}.")
        data = {}
        for key, value in self.data.items():
            if not isinstance(key, str):
                raise ValueError(f"data keys must be strings, got {key!r}.")
            value = np.array(value)
            if value.ndim == 0 or len(value) != n:
                raise ValueError(
                    f"data[{key!r}] must have {n} rows to match xyxy, got {value.shape}."
                )
            data[key] = _frozen(value)
        set_field = object.__setattr__  # the dataclass is frozen; fields are normalised once here
        set_field(self, "xyxy", _frozen(xyxy))
        set_field(self, "confidence", _frozen(confidence))
        set_field(self, "class_id", _frozen(class_id))
        set_field(self, "labels", _frozen(labels))
        set_field(self, "data", types.MappingProxyType(data))
        set_field(self, "metadata", types.MappingProxyType(dict(self.metadata)))

    # ----------------------------------------------------------------------------------------------
    # Container protocol

    def __len__(self) -> int:
        return len(self.xyxy)

    def __iter__(self) -> Iterator[Detection]:
        for i in range(len(self)):
            yield Detection(
                xyxy=self.xyxy[i],
                confidence=float(self.confidence[i]),
                class_id=int(self.class_id[i]),
                label=str(self.labels[i]),
                data={k: v[i] for k, v in self.data.items()},
            )

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray | str) -> Any:
        """Selects detections (int, slice, int array, bool mask), or reads ``data[key]`` for a str.

        An int gives a Detections of length 1, so the arrays stay 2-D.
        """
        if isinstance(index, str):
            return self.data[index]
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"index {index} out of range for {len(self)} detections.")
            index = np.array([index])
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == np.bool_ and index.shape != (len(self),):
                raise IndexError(f"bool mask has shape {index.shape}, expected ({len(self)},).")
            if index.size == 0:
                index = index.astype(np.int64)
        return dataclasses.replace(
            self,
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            labels=self.labels[index],
            data={k: v[index] for k, v in self.data.items()},
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        return (
            np.array_equal(self.xyxy, other.xyxy)
            and np.array_equal(self.confidence, other.confidence)
            and np.array_equal(self.class_id, other.class_id)
            and np.array_equal(self.labels, other.labels)
            and self.data.keys() == other.data.keys()
            and all(np.array_equal(v, other.data[k]) for k, v in self.data.items())
            and dict(self.metadata) == dict(other.metadata)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking arrays inside; not hashable

    def __repr__(self) -> str:
        extras = f", data={list(self.data)}" if self.data else ""
        return f"Detections(n={len(self)}, labels={sorted(set(self.labels.tolist()))}{extras})"

    # ----------------------------------------------------------------------------------------------
    # Constructors

    @classmethod
    def empty(cls, metadata: Mapping[str, Any] | None = None) -> Detections:
        """No detections (for an image where nothing scored above the threshold)."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros(0, np.float32),
            class_id=np.zeros(0, np.int64),
            labels=np.zeros(0, np.str_),
            metadata=metadata or {},
        )

    @classmethod
    def merge(cls, items: Sequence[Detections]) -> Detections:
        """Concatenates detections of the same image (e.g. from several query batches).

        Raises:
            ValueError: the non-empty items carry different ``data`` keys, or their metadata
                disagree on a key (they are from different images; keep one Detections per image).
        """
        items = list(items)
        metadata: dict[str, Any] = {}
        for item in items:
            for key, value in item.metadata.items():
                if key in metadata and metadata[key] != value:
                    raise ValueError(
                        f"cannot merge detections whose metadata[{key!r}] differ "
                        f"({metadata[key]!r} vs {value!r}); keep one Detections per image."
                    )
                metadata[key] = value
        filled = [d for d in items if len(d)]
        if not filled:
            return cls.empty(metadata)
        keys = filled[0].data.keys()
        for item in filled[1:]:
            if item.data.keys() != keys:
                raise ValueError(
                    f"cannot merge detections with different data keys: {sorted(keys)} vs "
                    f"{sorted(item.data.keys())}."
                )
        return cls(
            xyxy=np.concatenate([d.xyxy for d in filled]),
            confidence=np.concatenate([d.confidence for d in filled]),
            class_id=np.concatenate([d.class_id for d in filled]),
            labels=np.concatenate([d.labels for d in filled]),
            data={k: np.concatenate([d.data[k] for d in filled]) for k in keys},
            metadata=metadata,
        )

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Detections:
        """Inverse of `to_dict`; float ``data`` values come back as float32, as owl writes them."""
        rows = record.get("detections", [])
        keys = sorted({k for row in rows for k in row.get("data", {})})
        data = {k: np.array([row["data"][k] for row in rows]) for k in keys}
        data = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in data.items()}
        return cls(
            xyxy=np.array([row["box"] for row in rows], np.float32).reshape(-1, 4),
            confidence=np.array([row["score"] for row in rows], np.float32),
            class_id=np.array([row["query_index"] for row in rows], np.int64),
            labels=np.array([row["label"] for row in rows], np.str_),
            data=data,
            metadata=dict(record.get("image", {})),
        )

    # ----------------------------------------------------------------------------------------------
    # Operations (each returns a new Detections)

    def with_nms(self, iou_threshold: float = 0.5, class_agnostic: bool = False) -> Detections:
        """Greedy non-maximum suppression; the result is sorted by descending confidence.

        Args:
            iou_threshold: a detection is dropped if its IoU with a higher-scoring kept one is
                greater than this.
            class_agnostic: suppress across queries too (otherwise only within a query).
        """
        from owl.ops.boxes import batched_nms, nms  # imports JAX; keep `import owl` light

        if class_agnostic:
            keep = nms(self.xyxy, self.confidence, iou_threshold)
        else:
            keep = batched_nms(self.xyxy, self.confidence, self.class_id, iou_threshold)
        return self[np.asarray(keep, dtype=np.int64)]

    def filter(self, min_confidence: float) -> Detections:
        """Keeps detections with confidence >= ``min_confidence``, in their current order."""
        return self[self.confidence >= min_confidence]

    def top_k(self, k: int) -> Detections:
        """The ``k`` most confident detections, by descending confidence (ties: earlier first)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}.")
        return self[np.argsort(-self.confidence, kind="stable")[:k]]

    @property
    def area(self) -> np.ndarray:
        """float32 [N] box areas in square pixels."""
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    # ----------------------------------------------------------------------------------------------
    # Interop

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (see the module docstring for the schema); floats keep float32 values."""
        detections = []
        for i in range(len(self)):
            row: dict[str, Any] = {
                "box": float32_list(self.xyxy[i]),
                "score": float32_list(self.confidence[i : i + 1])[0],
                "label": str(self.labels[i]),
                "query_index": int(self.class_id[i]),
            }
            if self.data:
                row["data"] = {k: _json_value(v[i]) for k, v in self.data.items()}
            detections.append(row)
        image = {k: _json_value(v) for k, v in self.metadata.items()}
        return {"image": image, "detections": detections}

    def to_supervision(self) -> Any:
        """Converts to ``supervision.Detections`` (labels go to ``data["class_name"]``).

        Raises:
            ImportError: supervision is not installed (``pip install supervision``).
        """
        try:
            import supervision
        except ImportError as e:
            raise ImportError(
                "to_supervision() needs the supervision package: pip install supervision"
            ) from e
        return supervision.Detections(**self.supervision_fields())

    def supervision_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``supervision.Detections`` (writable copies of the arrays)."""
        data = {k: np.array(v) for k, v in self.data.items()}
        data["class_name"] = np.array(self.labels)
        return {
            "xyxy": np.array(self.xyxy),
            "confidence": np.array(self.confidence),
            "class_id": np.array(self.class_id),
            "data": data,
            "metadata": dict(self.metadata),
        }


def _as_array(value: Any, dtype: type, name: str) -> np.ndarray:
    try:
        array = np.array(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {type(value).__name__} ({e}).") from e
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return array


def float32_list(values: np.ndarray) -> list[float]:
    """float32 values as Python floats with the shortest text that reads back to the same float32.

    ``0.3`` stays ``0.3`` in JSON/CSV instead of ``0.30000001192092896``, and still round-trips.
    """
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32).ravel()]


def _json_value(value: Any) -> Any:
    """numpy scalars/arrays -> plain Python values for json.dump."""
    if isinstance(value, np.ndarray):
        if value.dtype == np.float32:
            return np.array(float32_list(value)).reshape(value.shape).tolist()
        return value.tolist()
    if isinstance(value, np.float32):
        return float32_list(np.array([value]))[0]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value
