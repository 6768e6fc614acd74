"""benchmarks/machine.py: every benchmark names the CPU it ran on, with the flags that decide speed.

A ratio measured on one CPU is no claim about another (issue 21: 0.66 on one AMD EPYC, 0.99 on
another of the same cloud kind), so the report must tell AVX-512, VNNI, BF16 and AMX apart.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import machine  # noqa: E402

# Trimmed /proc/cpuinfo of the two machine kinds seen: AMD EPYC (AVX-512, VNNI, BF16, no AMX) and an
# Intel Xeon with AMX. Only the first processor's lines count.
AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16
processor\t: 1
model name\t: something else
flags\t\t: fpu
"""
INTEL = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu avx2 avx512f avx_vnni avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
OLD = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU E5-2686 v4
flags\t\t: fpu sse avx avx2 fma
"""


def test_flags_tell_the_machine_kinds_apart():
    assert machine.cpu_info(AMD) == {
        "model": "AMD EPYC 9R14",
        "flags": {"AVX-512": True, "VNNI": True, "BF16": True, "AMX": False},
    }
    assert machine.cpu_info(INTEL)["flags"] == {
        "AVX-512": True, "VNNI": True, "BF16": True, "AMX": True,
    }  # fmt: skip
    assert machine.cpu_info(OLD)["flags"] == {
        "AVX-512": False, "VNNI": False, "BF16": False, "AMX": False,
    }  # fmt: skip


def test_report_line():
    assert machine.cpu_report(AMD, cores=2) == (
        "AMD EPYC 9R14, 2 cores; AVX-512 yes, VNNI yes, BF16 yes, AMX no"
    )


def test_the_script_prints_this_machines_cpu_model():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/machine.py")], capture_output=True, text=True,
        check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        if model:
            assert out[0].startswith(model.group(1).strip() + ", ")
    assert re.fullmatch(r"load average \d+\.\d\d, \d+\.\d\d, \d+\.\d\d", out[1])


def test_every_benchmark_that_prints_a_machine_line_takes_it_from_machine_py():
    printing = [p for p in (REPO / "benchmarks").glob("*.py") if "machine:" in p.read_text()]
    assert len(printing) >= 8
    own = [
        p.name for p in printing
        if "from machine import" not in p.read_text() and "from forward import" not in p.read_text()
    ]  # fmt: skip
    assert own == []
