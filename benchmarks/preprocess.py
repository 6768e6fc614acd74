"""Preprocessing of real-size photos: owl's banded resize against the old pad-filter-zoom path.

Each measurement runs in a fresh subprocess (so peak RSS belongs to one call), alternating the
two implementations. Reported per case: median wall time of `preprocess` (decode included), peak
memory as bytes per input pixel (peak RSS minus the RSS before the call, which includes Pillow's
own decoded copy at 4 bytes per pixel), and max |diff| of the model pixels between the two.

The old path is the frozen copy in tests/ops/reference_preprocess.py (float64, padded square);
it is skipped above `--old-max-mp` megapixels, where it needs tens of GB.

    python benchmarks/preprocess.py                 # 12 MP JPEG, both methods, S = 960
    python benchmarks/preprocess.py --huge          # + a 20000 x 20000 JPEG (new path only)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[5])
from owl.ops.image import preprocess
from reference_preprocess import reference_pixels
from PIL import Image

def rss():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) * 1024

path, size, method, which = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
warm = np.zeros((8, 8, 3), np.uint8)
preprocess(warm, image_size=size, pad_value=0.0, method=method)
reference_pixels(warm, size, pad_value=0.0, method=method)
base = rss()
t = time.perf_counter()
if which == "owl":
    pixels, meta = preprocess(path, image_size=size, pad_value=0.0, method=method, max_pixels=None)
    n = meta.width * meta.height
else:
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as pil:
        pixels = reference_pixels(pil, size, pad_value=0.0, method=method)
        n = pil.width * pil.height
seconds = time.perf_counter() - t
with open("/proc/self/status") as f:
    peak = int(f.read().split("VmHWM:")[1].split()[0]) * 1024  # this process's own peak
np.save(sys.argv[6], pixels)
print(json.dumps({"seconds": seconds, "bytes_per_pixel": (peak - base) / n}))
"""


def make_photo(path: Path, height: int, width: int) -> None:
    """A JPEG with gradients, edges and noise (compresses and decodes like a photo)."""
    import numpy as np
    from PIL import Image

    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x / width * 255).astype(np.uint8)
    img[..., 1] = (y / height * 255).astype(np.uint8)
    img[..., 2] = (((x // 61 + y // 47) % 2) * 200).astype(np.uint8)
    Image.fromarray(img).save(path, quality=90)


def run(path: Path, size: int, method: str, which: str, out: Path) -> dict:
    cmd = [sys.executable, "-c", CHILD, str(path), str(size), method, which]
    cmd += [str(REPO / "tests" / "ops"), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=960)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--huge", action="store_true", help="add a 20000 x 20000 image")
    parser.add_argument("--old-max-mp", type=float, default=20.0)
    args = parser.parse_args()
    from machine import load_report, machine  # benchmarks/machine.py: CPU model and flags

    print(f"machine: {machine()}; {load_report()}")
    cases = [(3000, 4000)] + ([(20000, 20000)] if args.huge else [])
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("| image | method | owl s | owl B/px | old s | old B/px | old/owl | max abs diff |")
        print("|---|---|---|---|---|---|---|---|")
        for height, width in cases:
            photo = tmp / f"{width}x{height}.jpg"
            make_photo(photo, height, width)
            old_ok = height * width / 1e6 <= args.old_max_mp
            for method in ("official", "tf"):
                res = {"owl": [], "old": []}
                for _ in range(args.repeats):
                    for which in ("owl", "old") if old_ok else ("owl",):
                        res[which].append(
                            run(photo, args.size, method, which, tmp / f"{which}.npy")
                        )
                owl_s = statistics.median(r["seconds"] for r in res["owl"])
                owl_b = statistics.median(r["bytes_per_pixel"] for r in res["owl"])
                if old_ok:
                    old_s = statistics.median(r["seconds"] for r in res["old"])
                    old_b = statistics.median(r["bytes_per_pixel"] for r in res["old"])
                    diff = float(np.abs(np.load(tmp / "owl.npy") - np.load(tmp / "old.npy")).max())
                    old = f"{old_s:.2f} | {old_b:.1f} | {old_s / owl_s:.1f}x | {diff:.1e}"
                else:
                    old = "- | - | - | -"
                mp = height * width / 1e6
                print(
                    f"| {width}x{height} ({mp:.0f} MP) | {method} | {owl_s:.2f} | {owl_b:.1f} | {old} |"
                )


if __name__ == "__main__":
    main()
