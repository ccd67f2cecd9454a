"""What `zerodl info` reports: version, backend, compiled kernels, BLAS and threads."""
from __future__ import annotations

import os
import platform

import numpy as np


def collect() -> dict:
    from . import _config, _kernels
    from ._kernels import _buffers
    from ._version import __version__

    data = {
        "zerodl": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "backend": _config.get_backend(),
        "env_backend": os.environ.get("ZERODL_BACKEND", "auto"),
        "cython_available": _kernels.cython_available(),
        "cython_error": _kernels.cython_import_error(),
        "compiled_kernels": _kernels.compiled_kernels(),
        "reference_fallbacks": list(_kernels.fallbacks()),
        "zerodl_threads": _config.get_num_threads(),
        "buffer_cache": _buffers.stats(),
        "build": _kernels.build_info(),
        "blas": [],
    }
    try:
        from threadpoolctl import threadpool_info
        data["blas"] = [
            {k: d.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                   "architecture", "filepath")}
            for d in threadpool_info()]
    except ImportError:
        data["blas"] = [{"note": "install threadpoolctl to see BLAS and OpenMP pools"}]
    return data


def render(d: dict) -> str:
    lines = [f"zerodl {d['zerodl']} (Python {d['python']}, NumPy {d['numpy']}, "
             f"{d['machine']}, {d['cpu_count']} CPUs)",
             f"backend: {d['backend']} (ZERODL_BACKEND={d['env_backend']})"]
    if d["cython_available"]:
        lines.append(f"compiled kernels: {len(d['compiled_kernels'])} "
                     f"({d['build'].get('variant', '?')})")
        for name, mod in sorted(d["compiled_kernels"].items()):
            lines.append(f"  {name:36s} {mod}")
        if d["reference_fallbacks"]:
            lines.append("taken from the NumPy reference (not compiled yet): "
                         + ", ".join(d["reference_fallbacks"]))
    else:
        lines.append(f"compiled kernels: none ({d['cython_error']})")
    for key, value in d["build"].items():
        if key != "variant":
            lines.append(f"build {key}: {value}")
    lines.append(f"zerodl kernel threads: {d['zerodl_threads']}")
    cache = d["buffer_cache"]
    lines.append(f"buffer cache (ZERODL_BUFFER_CACHE_MB): limit {cache['limit'] / 2**20:.0f} MB, "
                 f"{cache['arrays']} arrays, {cache['held_bytes'] / 2**20:.1f} MB held")
    for pool in d["blas"]:
        if "note" in pool:
            lines.append(pool["note"])
        else:
            lines.append(f"{pool['user_api']}: {pool['internal_api']} {pool.get('version') or ''} "
                         f"threads={pool['num_threads']} arch={pool.get('architecture')} "
                         f"({os.path.basename(pool['filepath'] or '')})")
    return "\n".join(lines)
