"""``report.md`` and ``index.html``: every figure with its caption, key numbers and times."""
from __future__ import annotations

import datetime as _dt
import html
import json
import os

from ._common import write_json_atomic, write_text_atomic
from .registry import EXPERIMENTS

__all__ = ["write_report", "load_results"]


def load_results(out_dir) -> list[dict]:
    """The ``result.json`` of every experiment found in ``out_dir``, in the book's order."""
    results = []
    for name in EXPERIMENTS:
        path = os.path.join(os.fspath(out_dir), name, "result.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                results.append(json.load(fh))
    return results


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3g}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _fmt_seconds(seconds) -> str:
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 90:
        return f"{int(minutes)} min {sec:02.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes):02d} min"


def _command(r) -> str:
    cmd = f"zerodl experiment {r['name']}{' --quick' if r.get('quick') else ''} " \
          f"--seed {r.get('seed', 0)} --backend {r.get('backend', 'auto')}"
    if str(r.get("threads", "")).isdigit():
        cmd += f" --threads {r['threads']}"
    return cmd


def _settings_text(settings: dict) -> str:
    parts = []
    for k, v in settings.items():
        if isinstance(v, dict):
            v = "; ".join(f"{kk}: {json.dumps(vv) if isinstance(vv, dict) else _fmt(vv)}"
                          for kk, vv in v.items())
        parts.append(f"{k} = {_fmt(v) if not isinstance(v, str) else v}")
    return "; ".join(parts)


def _mode(results) -> str:
    modes = {("quick" if r.get("quick") else "full") for r in results}
    return " and ".join(sorted(modes)) or "-"


def _header_facts(results, total_seconds):
    backends = sorted({r.get("backend", "?") for r in results})
    seeds = sorted({r.get("seed") for r in results if r.get("seed") is not None})
    run_sum = sum(float(r.get("seconds", 0)) for r in results)
    threads = sorted({str(r["threads"]) for r in results if r.get("threads")})
    facts = [("experiments", str(len(results))),
             ("mode", _mode(results)),
             ("backend", ", ".join(backends))]
    if threads:
        facts.append(("kernel and BLAS threads", ", ".join(threads)))
    facts += [("seed", ", ".join(str(s) for s in seeds)),
              ("zerodl", ", ".join(sorted({r.get("zerodl_version", "?") for r in results}))),
              ("time of the experiments", _fmt_seconds(run_sum))]
    if total_seconds is not None:
        facts.append(("wall time of this run", _fmt_seconds(total_seconds)))
    facts.append(("written", _dt.datetime.now().astimezone().isoformat(timespec="seconds")))
    return facts, run_sum


def _closing(results, total_seconds, run_sum) -> str:
    backends = sorted({r.get("backend", "?") for r in results})
    mode = _mode(results)
    slowest = max(results, key=lambda r: float(r.get("seconds", 0))) if results else None
    text = (f"All {len(results)} experiments took {_fmt_seconds(run_sum)} in {mode} mode on "
            f"the {', '.join(backends)} backend")
    if total_seconds is not None:
        text += f" ({_fmt_seconds(total_seconds)} wall time, including loading MNIST)"
    text += "."
    if slowest is not None and run_sum > 0:
        share = 100.0 * float(slowest["seconds"]) / run_sum
        text += (f" The slowest was `{slowest['name']}` ({_fmt_seconds(slowest['seconds'])}, "
                 f"{share:.0f}% of the total).")
    text += (" Times are wall-clock seconds measured on this machine in this run (shared "
             "machines drift; compare ratios measured close together). To set another "
             "backend's times beside these, run the same command with `--backend numpy "
             "--out OTHER` and then this one with `--compare-with OTHER`.")
    return text


def _comparison(results, compare):
    """Rows (name, this run's seconds, the other run's seconds or None) and a label."""
    if not compare:
        return None, None
    other = {r["name"]: r for r in compare}
    backends = sorted({r.get("backend", "?") for r in compare})
    modes = _mode(compare)
    label = f"{', '.join(backends)} backend, {modes} mode (measured)"
    rows = []
    for r in results:
        o = other.get(r["name"])
        same = o is not None and bool(o.get("quick")) == bool(r.get("quick"))
        rows.append((r["name"], float(r["seconds"]), float(o["seconds"]) if same else None))
    return rows, label


def render_markdown(results, total_seconds=None, compare=None) -> str:
    facts, run_sum = _header_facts(results, total_seconds)
    lines = ["# zerodl experiments: chapters 6 and 7 of *Deep Learning from Scratch*", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts] + [""]
    lines += ["| # | experiment | figures | time |", "|---|---|---|---|"]
    for i, r in enumerate(results, 1):
        lines.append(f"| {i} | [{r['title']}](#{r['name']}) (`{r['name']}`) | "
                     f"{len(r['figures'])} | {_fmt_seconds(r['seconds'])} |")
    lines.append("")
    for i, r in enumerate(results, 1):
        lines += [f'<a id="{r["name"]}"></a>', "",
                  f"## {i}. {r['title']}", "",
                  r.get("description", ""), "",
                  f"*`{_command(r)}`: {_fmt_seconds(r['seconds'])} on the "
                  f"{r.get('backend', '?')} backend, {'quick' if r.get('quick') else 'full'} "
                  f"mode.*", "",
                  f"Settings: {_settings_text(r.get('settings', {}))}.", ""]
        for fig in r["figures"]:
            path = fig["file"].replace(os.sep, "/")
            lines += [f"![{fig['title']}]({path})", "", f"*{fig['caption']}*", ""]
        if r.get("key_numbers"):
            lines += ["| key number | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in r["key_numbers"].items()]
            lines.append("")
        for note in r.get("notes", []):
            lines += [f"> {note}", ""]
        lines += [f"All numbers: [`{r['numbers_file']}`]({r['numbers_file']}).", ""]
    lines += ["## Closing note", "", _closing(results, total_seconds, run_sum), ""]
    rows, label = _comparison(results, compare)
    if rows is None:
        lines += ["| experiment | time |", "|---|---|"]
        lines += [f"| `{r['name']}` | {_fmt_seconds(r['seconds'])} |" for r in results]
        lines += [f"| **total** | **{_fmt_seconds(run_sum)}** |", ""]
    else:
        this = ", ".join(sorted({r.get("backend", "?") for r in results}))
        lines += [f"| experiment | this run ({this}) | {label} | ratio |", "|---|---|---|---|"]
        other_sum = 0.0
        for name, mine, theirs in rows:
            other_sum += theirs or 0.0
            lines.append(f"| `{name}` | {_fmt_seconds(mine)} | "
                         f"{_fmt_seconds(theirs) if theirs else '-'} | "
                         f"{f'{theirs / mine:.2f}x' if theirs and mine else '-'} |")
        lines += [f"| **total** | **{_fmt_seconds(run_sum)}** | **{_fmt_seconds(other_sum)}** | "
                  f"**{other_sum / run_sum:.2f}x** |" if run_sum else "", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; } h2 { margin-top: 2.2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-style: italic; color: #444; margin-top: 0.3em; }
.meta { color: #555; font-size: 0.92em; } .settings { font-size: 0.88em; color: #555; }
blockquote { border-left: 3px solid #ccc; margin-left: 0; padding-left: 1em; color: #444; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def render_html(results, total_seconds=None, compare=None) -> str:
    e = html.escape
    facts, run_sum = _header_facts(results, total_seconds)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>zerodl experiments</title>", f"<style>{_CSS}</style></head><body>",
           "<h1>zerodl experiments: chapters 6 and 7 of <i>Deep Learning from Scratch</i></h1>",
           "<table>"]
    out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts]
    out += ["</table>", "<table><tr><th>#</th><th>experiment</th><th>figures</th>"
            "<th>time</th></tr>"]
    for i, r in enumerate(results, 1):
        out.append(f'<tr><td>{i}</td><td><a href="#{e(r["name"])}">{e(r["title"])}</a> '
                   f'(<code>{e(r["name"])}</code>)</td><td>{len(r["figures"])}</td>'
                   f'<td>{e(_fmt_seconds(r["seconds"]))}</td></tr>')
    out.append("</table>")
    for i, r in enumerate(results, 1):
        mode = "quick" if r.get("quick") else "full"
        cmd = _command(r)
        out += [f'<h2 id="{e(r["name"])}">{i}. {e(r["title"])}</h2>',
                f"<p>{e(r.get('description', ''))}</p>",
                f'<p class="meta"><code>{e(cmd)}</code>: {e(_fmt_seconds(r["seconds"]))} on '
                f"the {e(r.get('backend', '?'))} backend, {mode} mode.</p>",
                f'<p class="settings">Settings: {e(_settings_text(r.get("settings", {})))}.</p>']
        for fig in r["figures"]:
            path = fig["file"].replace(os.sep, "/")
            out.append(f'<figure><img src="{e(path)}" alt="{e(fig["title"])}">'
                       f"<figcaption>{e(fig['caption'])}</figcaption></figure>")
        if r.get("key_numbers"):
            out.append("<table><tr><th>key number</th><th>value</th></tr>")
            out += [f"<tr><td>{e(k)}</td><td>{e(_fmt(v))}</td></tr>"
                    for k, v in r["key_numbers"].items()]
            out.append("</table>")
        for note in r.get("notes", []):
            out.append(f"<blockquote>{e(note)}</blockquote>")
        out.append(f'<p class="meta">All numbers: <a href="{e(r["numbers_file"])}">'
                   f"<code>{e(r['numbers_file'])}</code></a>.</p>")
    out += ["<h2>Closing note</h2>", f"<p>{e(_closing(results, total_seconds, run_sum))}</p>"]
    rows, label = _comparison(results, compare)
    if rows is None:
        out.append("<table><tr><th>experiment</th><th>time</th></tr>")
        out += [f"<tr><td><code>{e(r['name'])}</code></td><td>{e(_fmt_seconds(r['seconds']))}"
                f"</td></tr>" for r in results]
        out.append(f"<tr><th>total</th><th>{e(_fmt_seconds(run_sum))}</th></tr></table>")
    else:
        this = ", ".join(sorted({r.get("backend", "?") for r in results}))
        out.append(f"<table><tr><th>experiment</th><th>this run ({e(this)})</th>"
                   f"<th>{e(label)}</th><th>ratio</th></tr>")
        other_sum = 0.0
        for name, mine, theirs in rows:
            other_sum += theirs or 0.0
            ratio = f"{theirs / mine:.2f}x" if theirs and mine else "-"
            out.append(f"<tr><td><code>{e(name)}</code></td><td>{e(_fmt_seconds(mine))}</td>"
                       f"<td>{e(_fmt_seconds(theirs)) if theirs else '-'}</td>"
                       f"<td>{ratio}</td></tr>")
        ratio = f"{other_sum / run_sum:.2f}x" if run_sum else "-"
        out.append(f"<tr><th>total</th><th>{e(_fmt_seconds(run_sum))}</th>"
                   f"<th>{e(_fmt_seconds(other_sum))}</th><th>{ratio}</th></tr></table>")
    out += ["</body></html>", ""]
    return "\n".join(out)


def write_report(out_dir, results=None, total_seconds=None, compare_dir=None
                 ) -> tuple[str, str]:
    """Write ``out_dir/report.md`` and ``out_dir/index.html`` (atomically).

    ``results`` defaults to every ``result.json`` found under ``out_dir``, so experiments
    run one at a time into the same folder add up to one report.  ``compare_dir``: the
    output folder of another run (e.g. ``--backend numpy``) whose measured times the
    closing note sets beside this run's.
    """
    out_dir = os.fspath(out_dir)
    run_file = os.path.join(out_dir, "run.json")
    if results is None:
        results = load_results(out_dir)
        if total_seconds is None and os.path.exists(run_file):
            # the wall time of the `all` run that wrote these results, if it is theirs
            with open(run_file, encoding="utf-8") as fh:
                run = json.load(fh)
            if sorted(run.get("names", [])) == sorted(r["name"] for r in results):
                total_seconds = run.get("total_seconds")
    else:
        results = [{k: v for k, v in r.items() if k != "numbers"} for r in results]
    if total_seconds is not None:
        write_json_atomic(run_file, {"total_seconds": round(float(total_seconds), 3),
                                     "names": [r["name"] for r in results]})
    compare = load_results(compare_dir) if compare_dir else None
    md = write_text_atomic(os.path.join(out_dir, "report.md"),
                           render_markdown(results, total_seconds, compare))
    page = write_text_atomic(os.path.join(out_dir, "index.html"),
                             render_html(results, total_seconds, compare))
    return md, page
