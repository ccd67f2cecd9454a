"""Names of the experiments, in the book's order, and their modules (imported lazily)."""
from __future__ import annotations

import importlib

#: CLI name -> module name inside zerodl.experiments, in the book's order.
EXPERIMENTS = {
    "optimizer-paths": "optimizer_paths",
    "optimizer-mnist": "optimizer_mnist",
    "init-histograms": "init_histograms",
    "init-mnist": "init_mnist",
    "activation-init-grid": "activation_init_grid",
    "batchnorm": "batchnorm",
    "overfit": "overfit",
    "hyperparameter-search": "hyperparameter_search",
    "convnet": "convnet",
    "ablation": "ablation",
}


class _Registry(dict):
    """name -> module, importing each module on first access."""

    def __missing__(self, name):
        return get_experiment(name)


REGISTRY = _Registry()


def normalize_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; choose one of: "
                       f"{', '.join(EXPERIMENTS)} (or 'all')")
    return key


def get_experiment(name: str):
    """The module of experiment ``name`` (CLI spelling or module spelling)."""
    key = normalize_name(name)
    if key not in dict.keys(REGISTRY):
        module = importlib.import_module(f"{__package__}.{EXPERIMENTS[key]}")
        if getattr(module, "NAME", None) != key:
            raise RuntimeError(f"{module.__name__}.NAME is {getattr(module, 'NAME', None)!r}, "
                               f"expected {key!r}")
        dict.__setitem__(REGISTRY, key, module)
    return dict.__getitem__(REGISTRY, key)
