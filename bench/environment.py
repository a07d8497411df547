"""Describe the machine and the software versions a run measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

import psutil
from loadgen import WRK

PACKAGES = (
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "openvino",
    "nncf",
    "numpy",
    "opencv-python-headless",
    "flask",
    "gunicorn",
    "werkzeug",
    "psutil",
    "matplotlib",
    "scikit-image",
)


CPU_FLAGS_OF_NOTE = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)


def machine() -> dict[str, Any]:
    """Return the CPU model, core count, RAM, OS and current load average."""
    return {
        "cpu_model": _cpu_model(),
        # What decides OpenVINO's bfloat16 and int8 speed: without avx512_bf16 or AMX it
        # computes a bf16 hint in f32; without VNNI int8 has no dot-product instructions.
        "cpu_flags_of_note": _cpu_flags(CPU_FLAGS_OF_NOTE),
        "cores": os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    """Return the installed versions of the packages and tools that matter here."""
    found: dict[str, str] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found["wrk"] = _wrk_version()
    return found


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags(wanted: tuple[str, ...]) -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def _wrk_version() -> str:
    try:
        completed = subprocess.run(
            [WRK, "-v"], capture_output=True, text=True, timeout=5, check=False
        )
    except OSError:
        return "missing"
    text = (completed.stdout or completed.stderr).strip().splitlines()
    return text[0].split(" Copyright")[0] if text else "unknown"
