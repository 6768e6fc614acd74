"""Which embedded store for `owl index`: SQLite (+ FAISS for the vectors) against LanceDB.

The synthetic workload of issue 11: N images, K boxes each, every box a random unit vector of
E dimensions with a class-head shift and scale. A box's logit for a query q is
(e . q + shift) * scale = [scale * e, scale * shift] . [q, 1], so ranking boxes by logit is a
maximum-inner-product search over (E + 1)-dimensional vectors; both stores answer it with an
inner-product ("dot") ANN index and exact search is a matrix product over all boxes.

Measured per store: write speed (boxes/s, in transactions of 1,000 images), query p50 / p95
(one query, the 10 best images, `--queries` repeats), recall@10 of the images against exact
search, and the size on disk. Install size is measured separately (du of a fresh venv with the
store's packages, minus one with numpy alone), see docs/search.md.

Each store runs in the interpreter given (LanceDB needs `pip install lancedb pylance`, FAISS
`pip install faiss-cpu`); nothing here is imported by owl:

    python benchmarks/search_store_compare.py --store sqlite-faiss --images 100000
    python benchmarks/search_store_compare.py --store lancedb --images 100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import tempfile
import time

import numpy as np


def synthetic(n_images: int, k: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n_images * k, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    shift = rng.normal(-0.5, 0.1, n_images * k).astype(np.float32)
    scale = rng.uniform(5, 15, n_images * k).astype(np.float32)
    return emb, shift, scale


def augmented(emb, shift, scale):
    return np.concatenate([emb * scale[:, None], (shift * scale)[:, None]], axis=1).astype(
        np.float32
    )


def exact_top_images(aug, k, q, top):
    logits = aug @ np.append(q, 1.0).astype(np.float32)
    per_image = logits.reshape(-1, k).max(axis=1)
    return set(np.argsort(-per_image)[:top].tolist())


def folder_size(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def pad_even(x):
    extra = (-x.shape[1]) % 4
    return np.concatenate([x, np.zeros((len(x), extra), np.float32)], axis=1) if extra else x


def run_sqlite_faiss(aug, k, queries, top, where, nprobe, refine):
    import faiss

    db = sqlite3.connect(os.path.join(where, "index.sqlite"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE boxes (image_id INTEGER, rank INTEGER, vector BLOB)")
    n_images = len(aug) // k
    start = time.perf_counter()
    for first in range(0, n_images, 1000):
        rows = [
            (i, r, aug[i * k + r].tobytes())
            for i in range(first, min(first + 1000, n_images))
            for r in range(k)
        ]
        with db:
            db.executemany("INSERT INTO boxes VALUES (?, ?, ?)", rows)
    write_s = time.perf_counter() - start
    # The ANN index: 4-bit product quantisation scanned with SIMD (FAISS "fast scan") over the
    # inner product, then the best `refine` x candidates re-scored exactly (here: IndexRefineFlat;
    # owl re-scores them with the class head). Dimensions are padded to a multiple of 2.
    start = time.perf_counter()
    padded = pad_even(aug)
    ivf = faiss.IndexRefineFlat(
        faiss.index_factory(
            padded.shape[1], f"PQ{padded.shape[1] // 2}x4fs", faiss.METRIC_INNER_PRODUCT
        )
    )
    ivf.train(padded[:: max(1, len(padded) // 200_000)])
    ivf.add(padded)
    ivf.k_factor = refine
    faiss.write_index(ivf.base_index, os.path.join(where, "vectors.faiss"))
    build_s = time.perf_counter() - start
    times, recalls = [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = ivf.search(pad_even(np.append(q, 1.0)[None].astype(np.float32)), top * k)
        found = []
        for box in ids[0]:
            image = int(box) // k
            if box >= 0 and image not in found:
                found.append(image)
        found = found[:top]
        times.append(time.perf_counter() - t)
        recalls.append(len(set(found) & exact_top_images(aug, k, q, top)) / top)
    db.close()
    return write_s, build_s, times, recalls


def run_lancedb(aug, k, queries, top, where, nprobe, refine):
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(where)
    n_images = len(aug) // k
    dim = aug.shape[1]
    schema = pa.schema(
        [
            ("image_id", pa.int64()),
            ("rank", pa.int32()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )
    table = db.create_table("boxes", schema=schema)
    start = time.perf_counter()
    for first in range(0, n_images, 1000):
        last = min(first + 1000, n_images)
        ids = np.repeat(np.arange(first, last), k)
        ranks = np.tile(np.arange(k, dtype=np.int32), last - first)
        vec = aug[first * k : last * k]
        batch = pa.table(
            {
                "image_id": ids,
                "rank": ranks,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), dim),
            },
            schema=schema,
        )
        table.add(batch)
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    table.optimize()
    partitions = int(4 * np.sqrt(len(aug)))
    table.create_index(
        metric="dot", num_partitions=partitions, index_type="IVF_PQ", num_sub_vectors=dim // 5
    )
    build_s = time.perf_counter() - start
    times, recalls = [], []
    for q in queries:
        t = time.perf_counter()
        hits = (
            table.search(np.append(q, 1.0).astype(np.float32))
            .metric("dot")
            .nprobes(nprobe)
            .refine_factor(refine)
            .limit(top * k)
            .select(["image_id"])
            .to_arrow()
        )
        found = []
        for image in hits["image_id"].to_pylist():
            if image not in found:
                found.append(image)
        found = found[:top]
        times.append(time.perf_counter() - t)
        recalls.append(len(set(found) & exact_top_images(aug, k, q, top)) / top)
    return write_s, build_s, times, recalls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite-faiss", "lancedb"], required=True)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--boxes", type=int, default=8, help="K boxes per image")
    parser.add_argument("--dim", type=int, default=64, help="embedding size E")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument(
        "--refine", type=int, default=32, help="candidates re-scored exactly, x top*K"
    )
    args = parser.parse_args()

    emb, shift, scale = synthetic(args.images, args.boxes, args.dim)
    aug = augmented(emb, shift, scale)
    rng = np.random.default_rng(7)
    queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    where = tempfile.mkdtemp(prefix="owl-store-")
    try:
        run = run_sqlite_faiss if args.store == "sqlite-faiss" else run_lancedb
        write_s, build_s, times, recalls = run(
            aug, args.boxes, queries, args.top, where, args.nprobe, args.refine
        )
        size = folder_size(where)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    ms = sorted(t * 1000 for t in times)
    from machine import load_report, machine  # benchmarks/machine.py: CPU model and flags

    print(f"machine: {machine()}; {load_report()}")
    print(f"command: python {' '.join(os.sys.argv)}")
    print(
        f"{args.store}: {args.images} images x {args.boxes} boxes, dim {args.dim}; "
        f"write {len(aug) / write_s:,.0f} boxes/s ({write_s:.1f} s), ANN build {build_s:.1f} s, "
        f"query p50 {statistics.median(ms):.1f} ms p95 {ms[int(0.95 * (len(ms) - 1))]:.1f} ms, "
        f"recall@{args.top} {np.mean(recalls):.3f}, disk {size / 2**20:.1f} MiB "
        f"({size / args.images:.0f} B/image)"
    )


if __name__ == "__main__":
    main()
