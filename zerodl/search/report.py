"""Results of a search: the best-N table, the narrowed ranges of the best trials (the
book's "Best-5"), a suggested next space, plots and ``results.json``."""
from __future__ import annotations

import json
import math
import os

from .._io import write_text_atomic
from .space import SearchSpace

RUN = "zerodl_run"


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def best_trials(study):
    """Complete trials, best first (ties: the earlier trial)."""
    from optuna.trial import TrialState
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: (-t.value, t.number))


def ranked_trials(study):
    """Complete trials best first, then pruned ones by the accuracy they were stopped at
    (their curves end early, so they rank below every complete trial)."""
    from optuna.trial import TrialState
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
              if t.value is not None]
    return best_trials(study) + sorted(pruned, key=lambda t: (-t.value, t.number))


def narrow(space: SearchSpace, best) -> tuple[dict, list[str]]:
    """For each searched parameter, the range of the best trials' values, plus notes on
    values crowding an edge of the searched range."""
    narrowed, notes = {}, []
    for d in space.searched():
        values = [t.params[d.name] for t in best if d.name in t.params]
        if not values:
            continue
        narrowed[d.name] = n = d.narrowed(values)
        for edge in d.edges(values):
            bound = d.low if edge == "lower" else d.high
            w = n.widened(within=d)
            past = w.low < d.low if edge == "lower" else w.high > d.high
            notes.append(f"{d.name}: the best trials sit at the {edge} edge of the range "
                         f"({_fmt(bound)}); " + ("the next range extends past it" if past
                                                 else "it cannot go further"))
    return narrowed, notes


def next_space(space: SearchSpace, narrowed: dict) -> SearchSpace:
    dims = {}
    for name, d in space.dims.items():
        dims[name] = narrowed[name].widened(within=d) if name in narrowed else d
    return SearchSpace(dims)


def table_rows(space: SearchSpace, best, top: int) -> list[dict]:
    rows = []
    for rank, t in enumerate(best[:top], start=1):
        run = t.user_attrs.get(RUN, {})
        train = run.get("train_acc") or [None]
        rows.append({"rank": rank, "trial": t.number, "val_acc": t.value,
                     "state": "complete" if t.state.name == "COMPLETE"
                     else f"pruned@{run.get('epochs_run')}",
                     "train_acc": train[-1],
                     "params": {d.name: t.params.get(d.name) for d in space.searched()},
                     "epochs": run.get("epochs_run"), "seconds": run.get("seconds")})
    return rows


def markdown_table(rows: list[dict], space: SearchSpace) -> str:
    names = [d.name for d in space.searched()]
    head = ["rank", "trial", "val acc", "train acc"] + names + ["seconds", "state"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [str(r["rank"]), str(r["trial"]), f"{r['val_acc']:.4f}",
                 "-" if r["train_acc"] is None else f"{r['train_acc']:.4f}"]
        cells += [_fmt(r["params"].get(n)) for n in names]
        cells.append("-" if r["seconds"] is None else f"{r['seconds']:.2f}")
        cells.append(r["state"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(rows: list[dict], space: SearchSpace) -> str:
    names = [d.name for d in space.searched()]
    head = ["#", "trial", "val acc", "train"] + names + ["s", ""]
    body = []
    for r in rows:
        body.append([str(r["rank"]), str(r["trial"]), f"{r['val_acc']:.4f}",
                     "-" if r["train_acc"] is None else f"{r['train_acc']:.4f}"]
                    + [_fmt(r["params"].get(n)) for n in names]
                    + ["-" if r["seconds"] is None else f"{r['seconds']:.2f}",
                       "" if r["state"] == "complete" else r["state"]])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(out)


# -- plots --------------------------------------------------------------------------------

def plot_best_curves(best, n: int, epochs: int | None = None):
    """The book's Best-N grid: validation (solid) and training (dashed) accuracy."""
    from ..plotting import new_figure

    shown = best[:n]
    cols = 5
    rows = max(1, math.ceil(len(shown) / cols))
    fig = new_figure(figsize=(2.2 * cols, 1.9 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(shown):
            ax.set_visible(False)
            continue
        t = shown[i]
        run = t.user_attrs.get(RUN, {})
        val, train = run.get("val_acc", []), run.get("train_acc", [])
        ax.plot(range(len(val)), val)
        ax.plot(range(len(train)), train, "--")
        ax.set_ylim(0.0, 1.0)
        if epochs:
            ax.set_xlim(-0.5, epochs - 0.5)
        ax.set_xticks([])
        if i % cols:
            ax.set_yticks([])
        tag = "" if t.state.name == "COMPLETE" else " pruned"
        ax.set_title(f"Best-{i + 1} (#{t.number}) {t.value:.3f}{tag}", fontsize=8)
    fig.suptitle("validation (solid) and training (dashed) accuracy per epoch")
    return fig


def _pick_axes(space: SearchSpace):
    numeric = [d for d in space.searched() if d.numeric]
    names = [d.name for d in numeric]
    if "lr" in names and "weight_decay" in names:
        return space["lr"], space["weight_decay"]
    if len(numeric) >= 2:
        return numeric[0], numeric[1]
    if numeric:
        return numeric[0], None
    return None, None


def plot_scatter(study, space: SearchSpace):
    """lr vs weight decay (or the first two numeric parameters), coloured by validation
    accuracy; pruned trials as crosses (coloured by their last reported accuracy)."""
    from optuna.trial import TrialState
    from ..plotting import new_figure

    xd, yd = _pick_axes(space)
    if xd is None:
        return None, None
    fig = new_figure(figsize=(6.4, 4.8))
    ax = fig.subplots()
    sc = None
    for state, marker, label in ((TrialState.COMPLETE, "o", "complete"),
                                 (TrialState.PRUNED, "x", "pruned")):
        ts = [t for t in study.get_trials(deepcopy=False, states=(state,))
              if xd.name in t.params and t.value is not None
              and (yd is None or yd.name in t.params)]
        if not ts:
            continue
        xs = [t.params[xd.name] for t in ts]
        ys = [t.params[yd.name] for t in ts] if yd else [t.value for t in ts]
        cs = [t.value for t in ts]
        sc = ax.scatter(xs, ys, c=cs, cmap="viridis", vmin=0.0, vmax=1.0, marker=marker,
                        s=28, label=label, linewidths=1.2 if marker == "x" else 0.3,
                        edgecolors=None if marker == "x" else "k")
    if sc is None:
        return None, None
    if xd.log:
        ax.set_xscale("log")
    ax.set_xlabel(xd.name)
    if yd is not None:
        if yd.log:
            ax.set_yscale("log")
        ax.set_ylabel(yd.name)
        fig.colorbar(sc, ax=ax, label="validation accuracy")
        name = f"{xd.name}_vs_{yd.name}.png"
    else:
        ax.set_ylabel("validation accuracy")
        name = f"val_acc_vs_{xd.name}.png"
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("trials coloured by validation accuracy")
    return fig, name


# -- everything ---------------------------------------------------------------------------

def write_report(study, space: SearchSpace, settings: dict, budget: int, final, out_dir,
                 *, complete: bool, top=20, best_k=5, plots=True, verbose=True, notes=(),
                 storage_display="", seconds=0.0):
    from .runner import FAIL_REASON, SearchResult, _counts

    notes = list(notes)
    trials = study.get_trials(deepcopy=False)
    counts = _counts(trials)
    best = best_trials(study)
    ranked = ranked_trials(study)
    rows = table_rows(space, ranked, top)
    narrowed, edge_notes = narrow(space, best[:best_k])
    notes += edge_notes
    nxt = next_space(space, narrowed) if narrowed else None
    trial_seconds = [t.user_attrs.get(RUN, {}).get("seconds") or 0.0 for t in trials]
    best_info = None
    if best:
        b = best[0]
        best_info = {"trial": b.number, "val_acc": b.value, "params": dict(b.params)}
    files = {}
    os.makedirs(out_dir, exist_ok=True)

    md = [f"# Search `{study.study_name}`", "",
          f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed, "
          f"{counts['RUNNING']} running of a budget of {budget} trials; "
          f"space `{space.to_cli()}`; {settings['train_size']} training images "
          f"({settings['val_fraction']:.0%} held out for validation, seed {settings['seed']}), "
          f"{settings['epochs']} epochs.", ""]
    if final:
        md += [f"Final pick: trial {final['trial']} (val acc {final['val_acc']:.4f}), "
               f"**test accuracy {final['test_acc']:.4f}** "
               f"(scored once, on {final['n_test']} test images).", ""]
    md += [f"## Best {len(rows)}", "", markdown_table(rows, space), ""]
    if narrowed:
        md += [f"## Ranges of the best {min(best_k, len(best))}", ""]
        md += [f"- `{n}`: `{d.spec(short=True)}` (searched `{space[n].spec()}`)"
               for n, d in narrowed.items()]
        md += ["", "## Suggested next space", "", "```", f"zerodl search {nxt.to_cli()}",
               "```", "", "```toml", nxt.to_toml().rstrip(), "```", ""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]

    files["markdown"] = write_text_atomic(os.path.join(out_dir, "results.md"), "\n".join(md))
    if nxt is not None:
        files["next_space"] = write_text_atomic(os.path.join(out_dir, "next_space.toml"),
                                            nxt.to_toml())
    if plots and ranked:
        try:
            from ..plotting import save_figure
            fig = plot_best_curves(ranked, top, settings["epochs"])
            files["best_curves"] = save_figure(fig, os.path.join(out_dir, "best_curves.png"))
            fig, name = plot_scatter(study, space)
            if fig is not None:
                files["scatter"] = save_figure(fig, os.path.join(out_dir, name))
        except ImportError as exc:
            notes.append(f"no plots: {exc}")

    per_trial = []
    for t in trials:
        run = t.user_attrs.get(RUN, {})
        entry = {"number": t.number, "state": t.state.name, "value": t.value,
                 "params": dict(t.params), "seconds": run.get("seconds"),
                 "epochs_run": run.get("epochs_run"), "seed": run.get("seed")}
        if t.user_attrs.get(FAIL_REASON):
            entry["fail_reason"] = t.user_attrs[FAIL_REASON]
        if t.user_attrs.get("zerodl_retry_of") is not None:
            entry["retry_of"] = t.user_attrs["zerodl_retry_of"]
        per_trial.append(entry)
    result = SearchResult(
        study_name=study.study_name, storage=storage_display, complete=complete,
        n_trials=budget, counts=counts, best=best_info, final=final, table=rows,
        narrowed={n: d.spec(short=True) for n, d in narrowed.items()}, next_space=nxt, notes=notes,
        out_dir=out_dir, files=files, seconds=seconds, settings=settings)
    doc = {"study": study.study_name, "storage": storage_display, "complete": complete,
           "budget": budget, "counts": counts, "settings": settings,
           "split": {"seed": settings["seed"], "train_size": settings["train_size"],
                     "val_fraction": settings["val_fraction"],
                     "sha256": settings.get("split_sha256")},
           "best": best_info, "final": final, "table": rows,
           "narrowed": result.narrowed,
           "next_space": {"cli": nxt.to_cli(), "space": nxt.to_dict()} if nxt else None,
           "notes": notes, "seconds_wall": round(seconds, 3),
           "seconds_trials_sum": round(sum(trial_seconds), 3), "trials": per_trial}
    files["json"] = write_text_atomic(os.path.join(out_dir, "results.json"),
                                  json.dumps(doc, indent=2, default=str))
    result.files = files

    if verbose:
        print()
        print(f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} "
              f"failed of a budget of {budget}; {seconds:.1f} s wall, "
              f"{sum(trial_seconds):.1f} s in trials")
        if rows:
            print(f"\nBest {len(rows)} (validation accuracy at the last epoch; pruned "
                  "trials at the epoch they were stopped, ranked below complete ones):")
            print(text_table(rows, space))
        if narrowed:
            print(f"\nRanges of the best {min(best_k, len(best))}:")
            for n, d in narrowed.items():
                print(f"  {n:14s} {d.spec(short=True):28s} (searched {space[n].spec()})")
            print("\nSuggested next space:\n  zerodl search " + nxt.to_cli())
        if final:
            print(f"\nFinal pick: trial {final['trial']}, val acc {final['val_acc']:.4f}, "
                  f"test acc {final['test_acc']:.4f} (scored once on the test set)")
        for n in notes:
            print(f"note: {n}")
        print(f"\nwrote {', '.join(os.path.basename(p) for p in files.values())} "
              f"to {out_dir}")
    return result
