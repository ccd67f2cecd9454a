"""Turn a pytest-benchmark JSON into ratio tables (markdown) and a grouped bar chart (PNG).

Usage::

    pytest bench/ --benchmark-only --benchmark-json out.json
    python bench/report.py out.json                      # tables to stdout, out.png
    python bench/report.py out.json --md report.md --png chart.png
    python bench/report.py out.json --peak-gflops 175 --peak-gbs 26   # % of roofline
    python bench/report.py runs/bench/bench.json         # `zerodl bench` output works too

For each benchmark group (``benchmark.group``, e.g. "train step mlp" or "conv fwd
100x1x28x28 k5") one markdown table lists every variant with its median, min and rounds,
and its **speedup** against the fastest variant of the group, against PyTorch and against
NumPy: speedup = reference median / this median, so > 1 means faster than the reference
(the fastest variant's column is <= 1 for everybody else).

* The variant of a benchmark is ``extra_info["variant"]`` if set, else the value of its
  ``variant``/``backend``/``impl`` parameter, else its parameter id.
* The PyTorch reference is the variant named ``torch-eager`` or ``torch`` (else the first
  whose name starts with "torch" and does not contain "compile"); the NumPy reference is
  ``zerodl-numpy`` or ``numpy`` (else the first containing "numpy").  ``--torch NAME`` and
  ``--numpy NAME`` pick others.
* Rooflines: where ``extra_info`` has ``flops`` (floating-point operations per call)
  and/or ``bytes`` (bytes moved per call), the table shows GFLOP/s and GB/s reached at the
  median.  With ``--peak-gflops`` and/or ``--peak-gbs`` (e.g. the ANCHORS figures: 175
  GFLOP/s float32 GEMM, ~26 GB/s RAM or ~70 GB/s in-cache bandwidth on 2 threads) it adds
  "roofline %": the time the roofline allows, max(flops/peak_gflops, bytes/peak_gbs),
  over the median.
* The chart (``--png``, default: the JSON's name with .png) has one cluster of bars per
  group, one bar per variant, median time on a log axis when the groups differ by more
  than 20x; ``--relative torch|numpy|fastest`` plots the speedups instead.  Needs
  matplotlib; ``--no-plot`` skips it.

Medians of one run only are comparable: absolute times drift with the machine's load.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

VARIANT_PARAMS = ("variant", "backend", "impl", "implementation", "library")


# ------------------------------------------------------------------ reading

def _variant_of(bench: dict) -> str:
    extra = bench.get("extra_info") or {}
    if extra.get("variant"):
        return str(extra["variant"])
    params = bench.get("params") or {}
    for key in VARIANT_PARAMS:
        if key in params:
            return str(params[key])
    return str(bench.get("param") or bench.get("name"))


def _group_of(bench: dict, variant: str) -> str:
    if bench.get("group"):
        return str(bench["group"])
    # no group: the test name plus its other parameters
    params = {k: v for k, v in (bench.get("params") or {}).items() if str(v) != variant}
    rest = " ".join(str(v) for v in params.values())
    base = str(bench.get("name", "?")).split("[")[0]
    return f"{base} {rest}".strip()


def load(path: str) -> dict:
    """{group: {variant: row}}; a row has median_s, min_s, rounds, extra_info."""
    with open(path) as fh:
        data = json.load(fh)
    groups: dict[str, dict] = {}
    if "benchmarks" in data:  # pytest-benchmark
        for bench in data["benchmarks"]:
            stats = bench.get("stats") or {}
            if "median" not in stats:
                continue
            variant = _variant_of(bench)
            group = _group_of(bench, variant)
            row = {"median_s": stats["median"], "min_s": stats.get("min"),
                   "rounds": stats.get("rounds"), "extra_info": bench.get("extra_info") or {},
                   "name": bench.get("fullname") or bench.get("name")}
            if variant in groups.setdefault(group, {}):
                variant = f"{variant} ({bench.get('param') or bench.get('name')})"
            groups[group][variant] = row
    elif "models" in data:  # `zerodl bench` JSON
        for model, res in data["models"].items():
            for variant, r in res.items():
                if "median_ms" not in r:
                    continue
                info = r.get("info") or {}
                extra = {k: info[k] for k in ("flops", "bytes", "threads", "adam")
                         if k in info}
                groups.setdefault(f"train step {model}", {})[variant] = {
                    "median_s": r["median_ms"] / 1e3, "min_s": r["min_ms"] / 1e3,
                    "rounds": len(r.get("samples_ms") or []), "extra_info": extra,
                    "name": f"{model} {variant}"}
        for model, res in (data.get("epochs") or {}).items():
            for variant, r in res.items():
                if "seconds" in r:
                    groups.setdefault(f"epoch {model}", {})[variant] = {
                        "median_s": r["seconds"], "min_s": r["seconds"], "rounds": 1,
                        "extra_info": {}, "name": f"epoch {model} {variant}"}
    else:
        raise ValueError(f"{path}: neither pytest-benchmark JSON ('benchmarks') nor "
                         f"`zerodl bench` JSON ('models')")
    return groups


# ------------------------------------------------------------------ references

def _pick(names, exact, contains, exclude=()):
    for name in exact:
        if name in names:
            return name
    for name in names:
        if contains(name) and not any(x in name for x in exclude):
            return name
    return None


def references(variants, torch_name=None, numpy_name=None) -> dict:
    names = list(variants)
    torch_ref = (torch_name if torch_name in names else None) if torch_name else _pick(
        names, ("torch-eager", "torch"), lambda n: n.startswith("torch"), ("compile",))
    numpy_ref = (numpy_name if numpy_name in names else None) if numpy_name else _pick(
        names, ("zerodl-numpy", "numpy"), lambda n: "numpy" in n)
    return {"torch": torch_ref, "numpy": numpy_ref}


# ------------------------------------------------------------------ tables

def _unit(seconds: float):
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale:
            return scale, unit
    return 1e-9, "ns"


def _num(v, spec=".2f"):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def group_rows(rows: dict, refs: dict, peak_gflops=None, peak_gbs=None) -> list[dict]:
    fastest = min(r["median_s"] for r in rows.values())
    out = []
    for variant, r in sorted(rows.items(), key=lambda kv: kv[1]["median_s"]):
        med = r["median_s"]
        extra = r["extra_info"]
        flops, nbytes = extra.get("flops"), extra.get("bytes")
        row = {"variant": variant, "median_s": med, "min_s": r["min_s"],
               "rounds": r["rounds"], "vs_fastest": fastest / med,
               "threads": extra.get("threads")}
        for key, ref in refs.items():
            row[f"vs_{key}"] = rows[ref]["median_s"] / med if ref else None
        row["gflops"] = flops / med / 1e9 if flops else None
        row["gbs"] = nbytes / med / 1e9 if nbytes else None
        bound = []
        if flops and peak_gflops:
            bound.append(flops / (peak_gflops * 1e9))
        if nbytes and peak_gbs:
            bound.append(nbytes / (peak_gbs * 1e9))
        row["roofline_pct"] = 100 * max(bound) / med if bound else None
        out.append(row)
    return out


def markdown(groups: dict, torch_name=None, numpy_name=None, peak_gflops=None,
             peak_gbs=None) -> str:
    parts = []
    for group, rows in groups.items():
        refs = references(rows, torch_name, numpy_name)
        table = group_rows(rows, refs, peak_gflops, peak_gbs)
        scale, unit = _unit(min(r["median_s"] for r in table))
        has_flops = any(r["gflops"] for r in table)
        has_bytes = any(r["gbs"] for r in table)
        has_roof = any(r["roofline_pct"] for r in table)
        head = ["variant", f"median {unit}", f"min {unit}", "rounds", "vs fastest",
                f"vs torch ({refs['torch'] or 'none'})", f"vs numpy ({refs['numpy'] or 'none'})"]
        if has_flops:
            head.append("GFLOP/s")
        if has_bytes:
            head.append("GB/s")
        if has_roof:
            head.append("roofline %")
        threads = sorted({r["threads"] for r in table if r["threads"] is not None})
        plural = "s" if threads != [1] else ""
        title = f"### {group}" + (f" ({', '.join(map(str, threads))} thread{plural})"
                                  if threads else "")
        lines = [title, "", "| " + " | ".join(head) + " |",
                 "|---|" + "---:|" * (len(head) - 1)]
        for r in table:
            cells = [r["variant"], _num(r["median_s"] / scale), _num(r["min_s"] / scale),
                     str(r["rounds"]), _num(r["vs_fastest"]) + "x",
                     _num(r["vs_torch"]) + ("x" if r["vs_torch"] else ""),
                     _num(r["vs_numpy"]) + ("x" if r["vs_numpy"] else "")]
            if has_flops:
                cells.append(_num(r["gflops"], ".1f"))
            if has_bytes:
                cells.append(_num(r["gbs"], ".1f"))
            if has_roof:
                cells.append(_num(r["roofline_pct"], ".0f"))
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    parts.append("Speedup columns: reference median / this median (> 1: faster than the "
                 "reference).")
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------ chart

def chart(groups: dict, relative: str | None = None, torch_name=None, numpy_name=None,
          title: str = ""):
    """The grouped bar chart as a matplotlib Figure."""
    try:
        from zerodl.benchmarks import bar_chart, format_ms
    except ImportError:  # not installed: the source checkout next to this file
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from zerodl.benchmarks import bar_chart, format_ms

    values, notes = {}, {}
    for group, rows in groups.items():
        refs = references(rows, torch_name, numpy_name)
        table = {r["variant"]: r for r in group_rows(rows, refs)}
        if relative:
            key = "vs_fastest" if relative == "fastest" else f"vs_{relative}"
            values[group] = {v: r[key] for v, r in table.items() if r.get(key)}
            notes[group] = {v: f"{r[key]:.3g}x" for v, r in table.items() if r.get(key)}
        else:
            values[group] = {v: r["median_s"] * 1e3 for v, r in table.items()}
            notes[group] = {v: (format_ms(r["median_s"] * 1e3) +
                                (f" ({r['vs_torch']:.2f}x)" if r.get("vs_torch") else ""))
                            for v, r in table.items()}
    if relative:
        ylabel = f"speedup vs {relative} (> 1: faster)"
        ratios = [x for g in values.values() for x in g.values()]
        log_scale = bool(ratios) and max(ratios) / min(ratios) > 20
    else:
        ylabel = "median time per call (ms)"
        # one axis for groups of very different sizes: log when they span > 20x
        medians = [statistics.median(g.values()) for g in values.values() if g]
        log_scale = None if not medians else (max(medians) / min(medians) > 20 or None)
    default = (f"speedup vs {relative} (reference median / median)" if relative
               else "median per call; (x): speedup vs torch")
    return bar_chart(values, title=title or default,
                     ylabel=ylabel, annotate=notes, log_scale=log_scale)


# ------------------------------------------------------------------ main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="pytest-benchmark JSON (or `zerodl bench` bench.json)")
    parser.add_argument("--md", help="also write the tables to this markdown file")
    parser.add_argument("--png", help="bar chart path (default: JSON name with .png)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--group", action="append", default=None,
                        help="only groups containing this text (repeatable)")
    parser.add_argument("--torch", dest="torch_name", help="PyTorch reference variant")
    parser.add_argument("--numpy", dest="numpy_name", help="NumPy reference variant")
    parser.add_argument("--peak-gflops", type=float, default=None)
    parser.add_argument("--peak-gbs", type=float, default=None)
    parser.add_argument("--relative", choices=("torch", "numpy", "fastest"), default=None,
                        help="plot speedups against this reference instead of times")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)

    groups = load(args.json)
    if args.group:
        groups = {g: r for g, r in groups.items() if any(s in g for s in args.group)}
    if not groups:
        print(f"{args.json}: no benchmark with statistics (was it run with "
              f"--benchmark-disable?)", file=sys.stderr)
        return 1
    text = markdown(groups, args.torch_name, args.numpy_name, args.peak_gflops,
                    args.peak_gbs)
    print(text)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(text)
    if not args.no_plot:
        png = args.png or os.path.splitext(args.json)[0] + ".png"
        try:
            fig = chart(groups, args.relative, args.torch_name, args.numpy_name, args.title)
        except ImportError as exc:
            print(f"no chart: {exc}", file=sys.stderr)
            return 0
        from zerodl.plotting import save_figure
        print(f"wrote {save_figure(fig, png)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
