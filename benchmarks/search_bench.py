"""Collection search (issue 11): indexing speed, index size, query latency, ANN recall, and
retrieval quality against the `owl detect` ranking. Prints the machine, the command and medians.

Three parts, each sized by flags (the defaults are the issue's targets; a busy 2-core machine
wants smaller counts, e.g. --images 1000 --synthetic-images 200000):

  1. --images N ShapesWorld images indexed with shapes-tiny: images/s, bytes per image on disk,
     query latency p50/p95 for a text query (text encoding included: the text cache is emptied
     before each query) and for a pre-embedded query (goal: p50 < 50 ms).
  2. --synthetic-images M images of random unit vectors, K boxes each, written directly through
     the store's API, searched through the FAISS path: p50 latency (goal < 200 ms) and recall@10
     of the images against exact search (goal >= 0.95).
  3. --heldout H held-out ShapesWorld images: mean average precision of the image ranking for the
     16 novel categories, by text and by one exemplar, for the index at several K and for the
     ranking `owl detect` gives by scoring every box of every image (goal: >= 95% of it).

    python benchmarks/search_bench.py --images 10000 --synthetic-images 1000000 --heldout 500
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import owl
from owl.data import shapes as world
from owl.inference.queries import EmbeddingQuery, ImageQuery
from owl.search import store
from owl.search.index import Index
from owl.search.vectors import REFINE, AnnIndex, augmented_queries, augmented_vectors, box_logits


def percentiles(values: list[float]) -> tuple[float, float]:
    ms = sorted(v * 1000 for v in values)
    return statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]


def generate(folder: Path, n: int, seed: int) -> dict:
    world.write_coco_dataset(folder, n, seed, progress=False)
    return json.loads((folder / "annotations.json").read_text())


def part_index(work: Path, n: int, k: int) -> None:
    data = generate(work / "collection", n, seed=101)
    paths = [str(work / "collection" / "images" / im["file_name"]) for im in data["images"]]
    det = owl.Detector("shapes-tiny", batch_size=8)
    det.encode_images(paths[:8])  # compile outside the timing
    det._images.clear()
    index_path = work / "collection.owlindex"
    with Index(index_path, model=det, boxes_per_image=k) as index:
        start = time.perf_counter()
        index.add(paths)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in work.glob("collection.owlindex*"))
        prompts = world.category_prompts()
        index.search(prompts[:1], top=10)  # compile and load the snapshot
        text_times, embedded_times = [], []
        for i in range(40):
            det._texts.clear()
            t = time.perf_counter()
            index.search([prompts[i % len(prompts)]], top=10)
            text_times.append(time.perf_counter() - t)
        embedded = [EmbeddingQuery(e, "q", kind="text") for e in det.embed_texts(prompts)]
        for i in range(40):
            t = time.perf_counter()
            index.search([embedded[i % len(embedded)]], top=10)
            embedded_times.append(time.perf_counter() - t)
    tp, tp95 = percentiles(text_times)
    ep, ep95 = percentiles(embedded_times)
    print(
        f"[1] {n} ShapesWorld images, shapes-tiny, K={k}: {n / seconds:.1f} images/s "
        f"({seconds:.0f} s), {size / n:,.0f} bytes/image on disk; query p50/p95: text "
        f"{tp:.1f}/{tp95:.1f} ms, pre-embedded {ep:.1f}/{ep95:.1f} ms"
    )


def part_synthetic(work: Path, m: int, k: int, dim: int = 64, queries: int = 30) -> None:
    rng = np.random.default_rng(0)
    db = store.connect(work / "synthetic.owlindex")
    start = time.perf_counter()
    for first in range(0, m, 2000):
        count = min(2000, m - first)
        emb = rng.standard_normal((count, k, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=2, keepdims=True)
        shift = rng.normal(-0.5, 0.1, (count, k)).astype(np.float32)
        scale = rng.uniform(5, 15, (count, k)).astype(np.float32)
        records = [
            store.ImageRecord(
                path=f"/synthetic/{first + i:07d}.png",
                sha256=f"{first + i:064x}",
                size=0,
                mtime_ns=0,
                width=128,
                height=128,
                scale=1.0,
                boxes=np.full((k, 4), 0.5, np.float32),
                embeddings=emb[i],
                logit_shift=shift[i],
                logit_scale=scale[i],
                objectness=np.full(k, np.nan, np.float32),
                box_index=np.arange(k),
            )  # fmt: skip
            for i in range(count)
        ]
        with store.write(db) as tx:
            store.put_images(tx, records)
    write_s = time.perf_counter() - start
    snap = store.snapshot(db, dim)
    db.close()
    start = time.perf_counter()
    ann = AnnIndex.for_snapshot(snap, None)
    build_s = time.perf_counter() - start
    aug = augmented_vectors(snap)
    q = rng.standard_normal((queries, dim)).astype(np.float32)
    times, recalls = [], []
    image_of_box = snap.image_of_box
    for j in range(queries):
        t = time.perf_counter()
        boxes = ann.candidate_boxes(q[j : j + 1], REFINE * 10 * k)  # the Index's search path
        images = np.unique(image_of_box[boxes])
        rows = np.concatenate([np.arange(snap.offsets[i], snap.offsets[i + 1]) for i in images])
        logits = box_logits(
            snap.embeddings[rows], snap.logit_shift[rows], snap.logit_scale[rows], q[j : j + 1]
        )[:, 0]
        best = np.full(len(snap.paths), -np.inf)
        np.maximum.at(best, image_of_box[rows], logits)
        found = set(np.argsort(-best)[:10].tolist())
        times.append(time.perf_counter() - t)
        exact = aug @ augmented_queries(q[j : j + 1], aug.shape[1])[0]
        per_image = np.maximum.reduceat(exact, snap.offsets[:-1])
        recalls.append(len(found & set(np.argsort(-per_image)[:10].tolist())) / 10)
    p50, p95 = percentiles(times)
    print(
        f"[2] synthetic {m:,} images x {k} boxes: write {m / write_s:,.0f} images/s, ANN build "
        f"{build_s:.0f} s, query p50/p95 {p50:.1f}/{p95:.1f} ms, recall@10 {np.mean(recalls):.3f}"
    )


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = relevant[order]
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def part_retrieval(work: Path, h: int, ks: list[int]) -> None:
    data = generate(work / "heldout", h, seed=202)
    exemplars = generate(work / "exemplars", 200, seed=303)
    paths = [str(work / "heldout" / "images" / im["file_name"]) for im in data["images"]]
    ids = [im["id"] for im in data["images"]]
    novel = [c for c in data["categories"] if c["split"] == "novel"]
    det = owl.Detector("shapes-tiny", batch_size=8, image_cache_size=h + 16)
    queries = {}
    for c in novel:
        ann = next(a for a in exemplars["annotations"] if a["category_id"] == c["id"])
        image = next(im for im in exemplars["images"] if im["id"] == ann["image_id"])
        x, y, w, hh = ann["bbox"]
        exemplar = ImageQuery(
            ((str(work / "exemplars" / "images" / image["file_name"]), (x, y, x + w, y + hh)),),
            label=c["name"],
        )
        queries[c["id"]] = {"text": c["name"], "exemplar": exemplar}
    relevant = {
        c["id"]: np.isin(
            ids, [a["image_id"] for a in data["annotations"] if a["category_id"] == c["id"]]
        )
        for c in novel
    }
    encodings = det.encode_images(paths)
    rows = []
    for kind in ("text", "exemplar"):
        aps = []
        for c in novel:
            qs = det.prepare_queries([queries[c["id"]][kind]])
            scores = np.array([det.score(e, qs).max() for e in encodings])
            aps.append(average_precision(scores, relevant[c["id"]]))
        rows.append((kind, "owl detect (all boxes)", np.nanmean(aps)))
    for k in ks:
        for rank in ("bound", "vocabulary"):
            vocab = [c["name"] for c in data["categories"] if c["split"] != "novel"]
            with Index(
                work / f"heldout-{k}-{rank}.owlindex", model=det, boxes_per_image=k, rank=rank,
                vocabulary=vocab if rank == "vocabulary" else (),
            ) as index:  # fmt: skip
                index.add(paths)
                position = {os.path.abspath(p): i for i, p in enumerate(paths)}
                for kind in ("text", "exemplar"):
                    aps = []
                    for c in novel:
                        scores = np.full(len(paths), -1.0)
                        for d in index.search(
                            [queries[c["id"]][kind]], top=len(paths), threshold=0.0,
                            max_detections=1, nms=False,
                        ):  # fmt: skip
                            scores[position[d.metadata["path"]]] = d.confidence[0]
                        aps.append(average_precision(scores, relevant[c["id"]]))
                    rows.append((kind, f"index K={k} rank={rank}", np.nanmean(aps)))
    reference = {kind: v for kind, name, v in rows if name.startswith("owl detect")}
    print(f"[3] retrieval mAP, 16 novel categories, {h} held-out images (shapes-tiny):")
    for kind, name, value in rows:
        print(
            f"    {kind:<9} {name:<32} mAP {value:.3f}  ({100 * value / reference[kind]:.1f}% of detect)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--boxes", type=int, default=16, help="K for part 1")
    parser.add_argument("--synthetic-images", type=int, default=1_000_000)
    parser.add_argument("--synthetic-boxes", type=int, default=8)
    parser.add_argument("--heldout", type=int, default=500)
    parser.add_argument("--ks", default="4,8,16,64", help="K values compared in part 3")
    parser.add_argument("--parts", default="1,2,3")
    args = parser.parse_args()
    from machine import load_report, machine  # benchmarks/machine.py: CPU model and flags

    print(f"machine: {machine()}; {load_report()}")
    print(f"command: python {' '.join(sys.argv)}")
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="owl-search-bench-") as work:
        if "1" in parts:
            part_index(Path(work), args.images, args.boxes)
        if "2" in parts:
            part_synthetic(Path(work), args.synthetic_images, args.synthetic_boxes)
        if "3" in parts:
            part_retrieval(Path(work), args.heldout, [int(k) for k in args.ks.split(",")])


if __name__ == "__main__":
    main()
