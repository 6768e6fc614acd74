"""Training throughput: compile time, median step time and images/s of owl's train step.

Builds the train step exactly as `owl.train.trainer.train_and_evaluate` does (same config files,
sharding over all local devices, optimiser, per-example clipping), with random initial weights
and synthetic batches of the training batch contract, then times steps after compilation.

Usage:
    python benchmarks/train_bench.py --config owl/configs/train_tiny.py --steps 20
    python benchmarks/train_bench.py --config owl/configs/finetune_owlvit_b32.py --batch-size 2 \
        --steps 3
    python benchmarks/train_bench.py --config owl/configs/finetune_owlvit_b32.py --batch-size 2 \
        --set optim.clip=global --json results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "owl" / "configs" / "train_tiny.py"))
    parser.add_argument(
        "--batch-size", type=int, default=None, help="global batch (default: config)"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps after compilation")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)

    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from owl.cli.train import load_config
    from owl.train import trainer

    overrides = ["init.mode=random", "data.kind=synthetic", "data.synthetic_examples=16"]
    if args.batch_size:
        overrides.append(f"train.batch_size={args.batch_size}")
    config = load_config(args.config, [*overrides, *args.overrides])
    trainer.check_config(config)
    model_config = trainer.model_config_from(config)
    mesh = trainer.make_mesh()
    spec = trainer._StepSpec(
        model=model_config,
        vision_drop_path=float(config.model.vision_drop_path),
        text_drop_path=float(config.model.text_drop_path),
        loss=trainer.loss_config_from(config),
        optim=tuple(sorted(trainer._optim_kwargs(config).items())),
        process_count=jax.process_count(),
    )
    optimizer, train_step, _, _ = trainer._compiled_steps(spec, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec(trainer.DATA_AXIS))
    loader, _ = trainer.build_loaders(config, model_config)
    batches = iter(loader)

    t0 = time.perf_counter()
    state = trainer._replicate(
        trainer.create_train_state(config, model_config, optimizer), replicated
    )
    init_s = time.perf_counter() - t0
    batch = trainer.global_batch(next(batches), data)
    t0 = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state, batch)  # warm-up step
    jax.block_until_ready(metrics)

    times = []
    for _ in range(args.steps):
        batch = trainer.global_batch(next(batches), data)
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    batch_size = int(config.train.batch_size)
    result = {
        "config": Path(args.config).name,
        "variant": config.model.variant,
        "image_size": model_config.image_size,
        "batch_size": batch_size,
        "queries": int(config.data.max_queries),
        "instances": int(config.data.max_instances),
        "clip": config.optim.clip,
        "freeze_text": bool(config.optim.freeze_text),
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "params": int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(state.params))),
        "init_s": round(init_s, 2),
        "compile_s": round(compile_s, 2),
        "median_step_s": round(step_s, 4),
        "images_per_s": round(batch_size / step_s, 2),
        "timed_steps": args.steps,
        "final_loss": float(metrics["loss"]),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
