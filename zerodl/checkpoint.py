"""Training checkpoints: everything needed to continue a run exactly.

One .npz holds the network's parameters and running statistics, the optimizer's state,
and a JSON document (stored as a plain unicode array, never pickled) with the zerodl
version, the run's settings, the trainer's history and the random generators' states.
"""
from __future__ import annotations

import json

import numpy as np

from ._version import __version__
from .nets import atomic_savez, load_npz

FORMAT = 1


def save_checkpoint(path, trainer, settings: dict) -> str:
    net, opt = trainer.network, trainer.optimizer
    arrays = {f"param:{k}": v for k, v in net.params.items()}
    arrays.update({f"buffer:{k}": v for k, v in net.buffers().items()})
    arrays.update({f"opt:{k}": v for k, v in opt.state_dict().items()})
    if trainer._best_params is not None:  # early stopping's snapshot of the best epoch
        arrays.update({f"best:{k}": v for k, v in trainer._best_params.items()})
    meta = {
        "format": FORMAT,
        "zerodl_version": __version__,
        "settings": settings,
        "history": trainer.history(),
        "optimizer": {"class": type(opt).__name__, "hyperparameters": opt.hyperparameters()},
        "rng": {"trainer": trainer.rng.bit_generator.state,
                "network": net.rng.bit_generator.state},
    }
    arrays["meta"] = np.array(json.dumps(meta))
    return atomic_savez(path, arrays)


def read_checkpoint(path) -> tuple[dict, dict]:
    """(meta, arrays) of a checkpoint, validated for format; arrays keyed without 'meta'."""
    data = load_npz(path)
    if "meta" not in data or data["meta"].dtype.kind != "U" or data["meta"].ndim != 0:
        raise ValueError(f"{path}: not a zerodl checkpoint (no metadata)")
    try:
        meta = json.loads(str(data.pop("meta")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt checkpoint metadata ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {meta.get('format')} is not {FORMAT}")
    return meta, data


def restore_checkpoint(trainer, meta: dict, arrays: dict) -> None:
    """Put a checkpoint's state into a freshly built trainer (same settings)."""
    net, opt = trainer.network, trainer.optimizer
    params = {k[len("param:"):]: v for k, v in arrays.items() if k.startswith("param:")}
    if set(params) != set(net.params):
        raise ValueError(f"checkpoint parameters {sorted(params)} do not match the network's "
                         f"{sorted(net.params)}")
    for k, v in params.items():
        if v.shape != net.params[k].shape or v.dtype.kind != "f":
            raise ValueError(f"checkpoint parameter {k} has shape {v.shape}/{v.dtype}, "
                             f"expected {net.params[k].shape}")
    best = {k[len("best:"):]: v for k, v in arrays.items() if k.startswith("best:")}
    if best and (set(best) != set(params)
                 or any(best[k].shape != params[k].shape for k in best)):
        raise ValueError("checkpoint's best-epoch snapshot does not match the network")
    buffers = net._check_buffers(
        {k[len("buffer:"):]: v for k, v in arrays.items() if k.startswith("buffer:")},
        "checkpoint")
    for k, v in params.items():
        net.params[k][...] = v
    net._set_buffers(buffers)
    trainer._best_params = ({k: np.array(v, dtype=net.dtype) for k, v in best.items()}
                            if best else None)
    if meta["optimizer"]["class"] != type(opt).__name__:
        raise ValueError(f"checkpoint optimizer {meta['optimizer']['class']} differs from "
                         f"{type(opt).__name__}")
    opt.load_state_dict({k[len("opt:"):]: v for k, v in arrays.items() if k.startswith("opt:")},
                        net.params)
    trainer.load_history(meta["history"])
    trainer.rng.bit_generator.state = meta["rng"]["trainer"]
    net.rng.bit_generator.state = meta["rng"]["network"]
