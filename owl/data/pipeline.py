"""The training input pipeline: a grain dataset whose batches follow the training batch contract.

`build_train_loader` returns a `TrainLoader`; ``iter(loader)`` is a `TrainIterator` with
``get_state()`` / ``set_state(state)``, so a resumed run sees exactly the batches an uninterrupted
run would. Underneath is a grain ``MapDataset -> IterDataset`` pipeline: examples are built in
worker processes (``mp_prefetch``, which also prefetches) and batched in the main process, in
sampler order. The state is the count of global batches consumed (plus seed, batch size and a
dataset fingerprint for validation); it is portable across worker and process counts.

Determinism. The data a run sees depends only on (seed, dataset), never on the worker count or
the number of processes:

* `EpochShuffleSampler` maps a global position ``i`` to (epoch, position) = divmod(i, N), picks
  the example ``permutation(seed, epoch)[position]`` and gives it its own numpy Generator seeded
  with (seed, epoch, position). All randomness of an example (mosaic size, the other mosaic tiles,
  flips, crops, negatives, prompt templates) comes from that Generator.
* Process p of P reads global positions p, p + P, p + 2P, ..., so its batch k holds positions
  k*G + p, k*G + p + P, ... of the global stream: the P per-process batches of step k are
  disjoint and together are global batch k (G = global batch size).

Mosaics take their first tile from the sampled example and the others uniformly at random from
the whole dataset (scenic takes consecutive examples of its shuffled stream instead); an epoch is
N output examples, in which every image is the first tile once.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import grain
import numpy as np

from owl.data.coco import DetectionDataset, Example
from owl.data.transforms import (
    AugmentConfig,
    Sample,
    add_random_negatives,
    augment_tile,
    choose_mosaic_size,
    encode_example,
    mosaic,
)
from owl.ops.image import load_image

# Domain tags so the shuffle and the per-example streams never share a seed.
_SHUFFLE_TAG = 0x5EED
_EXAMPLE_TAG = 0xE8A


class EpochShuffleSampler:
    """A grain sampler: a fresh permutation per epoch and a Generator per (seed, epoch, position).

    Args:
        num_records: N, the number of examples.
        seed: the run's data seed (>= 0).
        num_epochs: how many epochs to yield; None repeats forever.
    """

    def __init__(self, num_records: int, seed: int, num_epochs: int | None = None) -> None:
        if num_records <= 0:
            raise ValueError(f"the dataset is empty (num_records={num_records}).")
        if num_epochs is not None and num_epochs <= 0:
            raise ValueError(f"num_epochs must be positive or None, got {num_epochs}.")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}.")
        self._n = int(num_records)
        self._seed = int(seed)
        self._num_epochs = num_epochs
        self._cached_epoch = -1
        self._cached_perm = np.zeros(0, np.int64)

    def __repr__(self) -> str:
        return (
            f"EpochShuffleSampler(num_records={self._n}, seed={self._seed}, "
            f"num_epochs={self._num_epochs})"
        )

    def __len__(self) -> int:
        return sys.maxsize if self._num_epochs is None else self._num_epochs * self._n

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the examples in ``epoch``."""
        if epoch != self._cached_epoch:
            rng = np.random.default_rng([_SHUFFLE_TAG, self._seed, epoch])
            self._cached_perm = rng.permutation(self._n)
            self._cached_epoch = epoch
        return self._cached_perm

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        if index < 0 or index >= len(self):
            raise IndexError(f"sampler index {index} out of range [0, {len(self)}).")
        epoch, position = divmod(int(index), self._n)
        key = int(self.permutation(epoch)[position])
        rng = np.random.default_rng([_EXAMPLE_TAG, self._seed, epoch, position])
        return grain.RecordMetadata(index=index, record_key=key, rng=rng)


class _ProcessShardSource:
    """Random-access source: element i of process p is the sampler's global position
    (start + i) * P + p, where ``start`` is the first local element to read (for resuming)."""

    def __init__(
        self, sampler: EpochShuffleSampler, process_index: int, process_count: int, start: int
    ) -> None:
        self._sampler = sampler
        self._p = int(process_index)
        self._count = int(process_count)
        self._start = int(start)

    def __len__(self) -> int:
        return max(0, len(self._sampler) // self._count - self._start)

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        return self._sampler[(self._start + int(index)) * self._count + self._p]


def load_sample(example: Example, negatives: Sequence[str], pad_value: float) -> Sample:
    """Reads an example's image; boxes are clipped to the decoded image (EXIF may differ)."""
    image = load_image(example.image_path, background=pad_value)
    height, width = image.shape[:2]
    boxes = np.asarray(example.boxes, dtype=np.float64).copy()
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    sample = Sample(image, boxes, tuple((label,) for label in example.labels), tuple(negatives))
    return sample.select(keep)


def make_training_example(
    dataset: DetectionDataset, index: int, rng: np.random.Generator, config: AugmentConfig
) -> dict[str, np.ndarray]:
    """Builds one training example (contract arrays) with ``dataset[index]`` as the first tile.

    Draws the mosaic size n, picks n * n - 1 further examples uniformly, augments every tile
    (flip, crop, resize-pad to S // n), tiles them, tops up the negatives with frequency-weighted
    random ones, and encodes the result (`owl.data.transforms.encode_example`). Class names
    annotated in any tile before cropping are never negatives; removed classes never appear.
    """
    n = choose_mosaic_size(rng, config.mosaic_sizes, config.mosaic_probs)
    keys = [int(index)] + [int(k) for k in rng.integers(0, len(dataset), size=n * n - 1)]
    tiles, annotated = [], set()
    for key in keys:
        example = dataset[key]
        annotated.update(example.labels)
        sample = load_sample(example, dataset.negatives_for(example), config.pad_value)
        tiles.append(augment_tile(sample, rng, config.image_size // n, config))
    sample = mosaic(tiles, config.image_size, config.pad_value, exclude_negatives=sorted(annotated))
    exclude = annotated | set(dataset.removed_names)
    sample = add_random_negatives(
        sample, rng, dataset.negative_sampler, config.num_negatives, exclude=sorted(exclude)
    )
    return encode_example(sample, rng, config)


class _TrainingExampleTransform(grain.transforms.Map):
    """grain transform: sampler metadata (record key + Generator) -> contract example."""

    def __init__(self, dataset: DetectionDataset, config: AugmentConfig) -> None:
        self._dataset = dataset
        self._config = config

    def map(self, element: grain.RecordMetadata) -> dict[str, np.ndarray]:
        return make_training_example(self._dataset, element.record_key, element.rng, self._config)


def _mark_flags_parsed() -> None:
    """grain workers read absl flags; mark them parsed when the program never parsed them."""
    try:
        from absl import flags
    except ImportError:  # pragma: no cover - absl comes with grain
        return
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class TrainIterator:
    """Iterator over training batches with a small, portable state.

    The state is the number of global batches consumed plus what identifies the stream (seed,
    global batch size, sampler, dataset fingerprint). It does not depend on the worker count or
    the number of processes, so a run can resume with either changed.
    """

    def __init__(self, loader: TrainLoader, batches_consumed: int = 0) -> None:
        self._loader = loader
        self._consumed = int(batches_consumed)
        self._it = iter(loader._pipeline(self._consumed))

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._it)
        self._consumed += 1
        return batch

    def get_state(self) -> dict[str, int | str]:
        """A JSON-serialisable dict from which `set_state` resumes after the last batch seen."""
        return {"batches_consumed": self._consumed, **self._loader.identity()}

    def set_state(self, state: Mapping[str, int | str]) -> None:
        """Continues with the batch after the ``state`` one (from `get_state`).

        Raises:
            ValueError: the state belongs to another seed, batch size, sampler or dataset.
        """
        identity = self._loader.identity()
        wrong = [k for k in identity if state.get(k) != identity[k]]
        if wrong or not isinstance(state.get("batches_consumed"), int):
            details = ", ".join(f"{k}: state {state.get(k)!r} vs {identity[k]!r}" for k in wrong)
            raise ValueError(
                "training data state does not match this loader"
                + (f" ({details})" if details else " (no integer 'batches_consumed')")
                + "; resume with the same dataset, seed and global batch size."
            )
        self.close()
        self._consumed = int(state["batches_consumed"])
        self._it = iter(self._loader._pipeline(self._consumed))

    def close(self) -> None:
        """Stops worker processes, if any."""
        close = getattr(self._it, "close", None)
        self._it = iter(())
        if close is not None:
            close()


class TrainLoader:
    """What `build_train_loader` returns: ``iter(loader)`` gives a `TrainIterator`.

    Attributes:
        dataset: the `DetectionDataset`.
        config: the `AugmentConfig`.
        seed, global_batch_size, process_index, process_count, worker_count, num_epochs: as
            passed to `build_train_loader`.
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        config: AugmentConfig,
        *,
        seed: int,
        global_batch_size: int,
        process_index: int,
        process_count: int,
        worker_count: int,
        prefetch_batches: int,
        num_epochs: int | None,
    ) -> None:
        self.dataset = dataset
        self.config = config
        self.seed = seed
        self.global_batch_size = global_batch_size
        self.process_index = process_index
        self.process_count = process_count
        self.worker_count = worker_count
        self.prefetch_batches = prefetch_batches
        self.num_epochs = num_epochs
        self.sampler = EpochShuffleSampler(len(dataset), seed, num_epochs)

    @property
    def batch_size(self) -> int:
        """Examples per batch in this process: global_batch_size / process_count."""
        return self.global_batch_size // self.process_count

    def identity(self) -> dict[str, int | str]:
        """What a state must match to be restored here."""
        return {
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "sampler": repr(self.sampler),
            "dataset": self.dataset.fingerprint(),
        }

    def __iter__(self) -> TrainIterator:
        return TrainIterator(self)

    def _pipeline(self, batches_consumed: int) -> grain.IterDataset:
        """The grain pipeline starting after ``batches_consumed`` global batches."""
        source = _ProcessShardSource(
            self.sampler, self.process_index, self.process_count, batches_consumed * self.batch_size
        )
        transform = _TrainingExampleTransform(self.dataset, self.config)
        ds = grain.MapDataset.source(source).map(transform)
        # No reader threads: parallelism comes from worker processes, and a thread buffer of
        # full-size images would only cost memory.
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        if self.worker_count > 0:
            _mark_flags_parsed()
            per_worker = max(1, -(-self.prefetch_batches * self.batch_size // self.worker_count))
            ds = ds.mp_prefetch(
                grain.MultiprocessingOptions(
                    num_workers=self.worker_count, per_worker_buffer_size=per_worker
                )
            )
        # Batching after the workers keeps the batches independent of the worker count.
        return ds.batch(self.batch_size, drop_remainder=True)


def build_train_loader(
    examples: DetectionDataset | Sequence[Example],
    *,
    seed: int,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    image_size: int,
    pad_value: float,
    max_queries: int = 100,
    max_instances: int = 100,
    num_negatives: int = 50,
    mosaic_sizes: Sequence[int] = (1, 2, 3),
    mosaic_probs: Sequence[float] = (0.4, 0.3, 0.3),
    prompt_templates: Sequence[str] = (),
    crop_area_range: tuple[float, float] = (0.3, 1.0),
    worker_count: int = 0,
    prefetch_batches: int = 2,
    num_epochs: int | None = None,
) -> TrainLoader:
    """A grain pipeline yielding this process's share of each global training batch.

    Args:
        examples: a `DetectionDataset` (from `owl.data.coco.load_detection_dataset`), or plain
            `Example`s (then federated: no exhaustive negatives; frequencies from their labels).
        seed: data seed (shuffle and augmentation), >= 0.
        global_batch_size: G, examples per step over all processes.
        process_index: this process's index p (``jax.process_index()``).
        process_count: P (``jax.process_count()``); G must be divisible by P.
        image_size: S, the model's input side.
        pad_value: padding grey level from the model config (0.5 v1, 0.0 v2).
        max_queries: Q.
        max_instances: M.
        num_negatives: negatives per example after random ones are added.
        mosaic_sizes: mosaic grid sizes.
        mosaic_probs: their probabilities.
        prompt_templates: templates, one drawn per label; () means owl's training templates
            (`owl.text.prompts.TRAINING_PROMPT_TEMPLATES`); ("{}",) uses the bare names.
        crop_area_range: random-crop area as a fraction of the image; (1, 1) never crops.
        worker_count: worker processes building examples (0: in this process). The batches do
            not depend on it.
        prefetch_batches: with workers, how many batches they prepare ahead.
        num_epochs: epochs to read; None repeats forever. A last partial batch is dropped.

    Returns:
        A `TrainLoader`. Its iterator yields dicts of numpy arrays with a leading axis
        B = G / P: "image" float32 [B, S, S, 3], "queries" int32 [B, Q, 16], "labels" float32
        [B, M, Q], "boxes" float32 [B, M, 4], "instance_mask" bool [B, M]; and has
        ``get_state()`` / ``set_state(state)`` (a small JSON-serialisable dict).

    Raises:
        ValueError: bad sizes, seed or indices.
    """
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"need 0 <= process_index < process_count, got {process_index} and {process_count}."
        )
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} must be a positive multiple of "
            f"process_count {process_count}."
        )
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0, got {worker_count}.")
    dataset = examples if isinstance(examples, DetectionDataset) else DetectionDataset(examples)
    config = AugmentConfig(
        image_size=image_size,
        pad_value=pad_value,
        max_queries=max_queries,
        max_instances=max_instances,
        num_negatives=num_negatives,
        mosaic_sizes=tuple(mosaic_sizes),
        mosaic_probs=tuple(mosaic_probs),
        crop_area_range=tuple(crop_area_range),
        **({"prompt_templates": tuple(prompt_templates)} if prompt_templates else {}),
    )
    return TrainLoader(
        dataset,
        config,
        seed=seed,
        global_batch_size=global_batch_size,
        process_index=process_index,
        process_count=process_count,
        worker_count=worker_count,
        prefetch_batches=prefetch_batches,
        num_epochs=num_epochs,
    )
