"""Which machine a benchmark ran on: CPU model, the flags that decide CPU speed, cores and load.

Figures from two CPUs of the "same" cloud kind can differ by 2x (issue 21: the README's ratios
were a property of one AMD EPYC), so every benchmark prints this line, and the README's tables
name the CPU they came from. The flags are the ones that change which kernels run:
AVX-512 (wide f32 FMA), VNNI (int8 dot products: ONNX Runtime's int8 kernels), BF16
(AVX512_BF16 dot products) and AMX (Intel's matrix tiles for int8/bf16).

    python benchmarks/machine.py
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Report name -> /proc/cpuinfo flags, any of which means the CPU has it.
FLAGS = {
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "BF16": ("avx512_bf16", "amx_bf16"),
    "AMX": ("amx_tile", "amx_int8", "amx_bf16"),
}


def cpu_info(text: str | None = None) -> dict:
    """CPU model and flags from /proc/cpuinfo text (read from the file when None).

    Returns {"model": str, "flags": {name: bool for FLAGS}}; "model" falls back to
    platform.processor() where there is no cpuinfo (not Linux).
    """
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {
        "model": model or platform.processor() or platform.machine(),
        "flags": {name: any(f in flags for f in names) for name, names in FLAGS.items()},
    }


def cpu_report(text: str | None = None, cores: int | None = None) -> str:
    """One line: "AMD EPYC, 2 cores; AVX-512 yes, VNNI yes, BF16 yes, AMX no"."""
    info = cpu_info(text)
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["flags"].items())
    return f"{info['model']}, {cores} cores; {flags}"


def load_report() -> str:
    """The 1/5/15-minute load average (the machine may be shared: say so with every timing)."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """CPU report plus OS and Python, for a benchmark's first line."""
    return f"{cpu_report()}; Linux {platform.release()}, Python {platform.python_version()}"


if __name__ == "__main__":
    print(machine())
    print(load_report())
