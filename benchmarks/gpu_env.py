"""owl on a GPU image as it is: owl from the source tree, the image's JAX/torch, few carried wheels.

The GPU machines have, preinstalled and offline, Python 3.12, jax 0.11.2 with the CUDA 13
plugin, flax, optax, orbax-checkpoint, torch 2.11, transformers 5.17 and onnxruntime 1.30. A
run carries at most 64 MiB. So owl is not installed there (its dependencies would replace the
image's JAX). It runs from the checkout on PYTHONPATH, and only the packages owl imports that
the image may lack travel, as wheels in `.gpu-wheels/`:

    python benchmarks/gpu_env.py prepare     # here, with the registry: download, list, size check
    python benchmarks/gpu_env.py install DIR # there: install only the missing ones into DIR
    python benchmarks/gpu_env.py versions    # there: what the image has, one line; jax in range?

`benchmarks/gpu.sh` runs the last two, then the benchmark. The wheel list is `CARRIED`: owl's
own dependencies (pyproject.toml) that are not the image's named packages nor their
dependencies. Each is installed only when its module cannot be imported from the image.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".gpu-wheels"
LIMIT_BYTES = 64 << 20  # what one device run may carry, the checkout included
PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

# distribution (as pip names it) -> (module it provides, version spec to download). Versions
# are the ones CI tests (.ci/constraints.txt) where owl's range allows.
CARRIED: dict[str, tuple[str, str]] = {
    "ml-collections": ("ml_collections", "ml-collections==1.1.0"),
    "ftfy": ("ftfy", "ftfy==6.3.1"),
    "wcwidth": ("wcwidth", "wcwidth"),  # ftfy's dependency
    "pycocotools": ("pycocotools", "pycocotools==2.0.11"),
    "click": ("click", "click>=8.2"),
    "threadpoolctl": ("threadpoolctl", "threadpoolctl>=3.5"),
    "pillow": ("PIL", "pillow>=11"),
    "regex": ("regex", "regex>=2024.1"),
    "safetensors": ("safetensors", "safetensors>=0.8"),
    "tqdm": ("tqdm", "tqdm>=4.66"),
}
# owl dependencies that the image's packages depend on themselves (flax needs msgpack,
# transformers needs pyyaml).
PROVIDED_BY_IMAGE = ("msgpack", "pyyaml")
# The image's own packages: checked and printed, never carried.
IMAGE = ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint", "numpy",
         "scipy", "torch", "transformers", "onnxruntime")  # fmt: skip


def wheel_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.whl"))


def size_report(files: list[Path], limit: int = LIMIT_BYTES) -> tuple[list[str], int, bool]:
    """One line per wheel (name, KiB), the total in bytes, and whether it fits under `limit`."""
    lines = [f"  {f.name:<70} {f.stat().st_size / 1024:9.1f} KiB" for f in files]
    total = sum(f.stat().st_size for f in files)
    return lines, total, total < limit


def prepare(folder: Path) -> int:
    """Downloads the carried wheels for CPython 3.12 on x86-64 Linux, lists them, checks size."""
    folder.mkdir(exist_ok=True)
    for old in wheel_files(folder):
        old.unlink()
    specs = [spec for _, spec in CARRIED.values()]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", PYTHON, "--implementation", "cp", "--dest", str(folder),
           *[a for p in PLATFORMS for a in ("--platform", p)], "--platform", "any", *specs]  # fmt: skip
    subprocess.run(cmd, check=True)
    files = wheel_files(folder)
    lines, total, fits = size_report(files)
    print(f"carried wheels in {folder} ({len(files)}):")
    print("\n".join(lines))
    print(f"total {total / 2**20:.2f} MiB of the {LIMIT_BYTES >> 20} MiB a run may carry")
    missing = [d for d in CARRIED if not any(_dist_of(f) == _norm(d) for f in files)]
    if missing:
        print(f"gpu_env: no wheel downloaded for {', '.join(missing)}", file=sys.stderr)
        return 1
    if not fits:
        print(f"gpu_env: the wheels total {total / 2**20:.1f} MiB, over the limit", file=sys.stderr)
        return 1
    return 0


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _dist_of(wheel: Path) -> str:
    return _norm(wheel.name.split("-")[0])


def missing_modules() -> list[str]:
    """The carried distributions whose module this Python cannot import."""
    return [d for d, (module, _) in CARRIED.items() if importlib.util.find_spec(module) is None]


def install(target: Path, folder: Path) -> int:
    """Installs, offline and without dependencies, only the carried wheels the image lacks."""
    missing = missing_modules()
    if not missing:
        print("gpu_env: the image has every package owl imports; nothing installed")
        return 0
    files = [f for f in wheel_files(folder) if _dist_of(f) in {_norm(d) for d in missing}]
    absent = sorted({_norm(d) for d in missing} - {_dist_of(f) for f in files})
    if absent:
        print(f"gpu_env: the image lacks {', '.join(absent)} and {folder} holds no wheel for it; "
              "run `python benchmarks/gpu_env.py prepare` first", file=sys.stderr)  # fmt: skip
        return 1
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--target", str(target), *map(str, files)], check=True)  # fmt: skip
    print(f"gpu_env: installed {', '.join(f.name for f in files)} into {target}")
    return 0


def versions() -> int:
    """Prints the image's versions on one line; exit 1 if jax is missing or outside owl's range."""
    found = {}
    for name in IMAGE:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "-"
    print(f"Python {sys.version.split()[0]}; " + ", ".join(f"{k} {v}" for k, v in found.items()))
    sys.path.insert(0, str(REPO))
    from owl.jax_support import JAX_RANGE, in_range

    if found["jax"] == "-" or not in_range(found["jax"]):
        print(f"gpu_env: jax {found['jax']} is not in owl's range {JAX_RANGE}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    prep = sub.add_parser("prepare")
    prep.add_argument("--dest", type=Path, default=WHEELS)
    inst = sub.add_parser("install")
    inst.add_argument("target", type=Path)
    sub.add_parser("versions")
    args = parser.parse_args()
    if args.step == "prepare":
        return prepare(args.dest)
    if args.step == "install":
        return install(args.target, WHEELS)
    return versions()


if __name__ == "__main__":
    sys.exit(main())
