"""Optimizers with the book's names and defaults (``common.optimizer``), plus AdamW.

``update(params, grads)`` updates the arrays of ``params`` in place.  State arrays
(velocities, squared-gradient sums, moments) are created on the first call with the
parameters' shapes and dtypes, and every call hands all parameter arrays to one kernel.
``state_dict()`` / ``load_state_dict()`` carry the state through a checkpoint.
"""
from __future__ import annotations

import numpy as np

from ._kernels import ops

__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "AdamW",
           "OPTIMIZERS", "make_optimizer"]


class Optimizer:
    """Base class: subclasses name their per-parameter state buffers in ``_state_names``."""

    _state_names: tuple[str, ...] = ()

    def __init__(self, lr):
        self.lr = lr
        self._keys: tuple | None = None
        self._state: dict[str, dict] = {}
        self._flat_state: dict[str, np.ndarray] = {}
        self.step_count = 0

    def _ensure_state(self, params) -> tuple:
        """Create the state buffers on first use (or when the parameter names change).

        When every parameter has one dtype, each state is one contiguous array and the
        per-parameter entries are views of it, so :meth:`update_flat` can update all
        parameters in a single kernel call."""
        keys = tuple(params.keys())
        if self._keys == keys:
            return keys
        if self._keys is not None and self._state:
            raise ValueError("the parameter names changed between updates: "
                             f"{self._keys} then {keys}")
        self._keys = keys
        self._flat_state = {}
        self._state = {}
        dtypes = {params[k].dtype for k in keys}
        single_dtype = dtypes.pop() if len(dtypes) == 1 else None
        total = sum(params[k].size for k in keys)
        for name in self._state_names:
            if single_dtype is not None:
                flat = np.zeros(total, dtype=single_dtype)
                self._flat_state[name] = flat
                views, offset = {}, 0
                for k in keys:
                    size = params[k].size
                    views[k] = flat[offset:offset + size].reshape(params[k].shape)
                    offset += size
                self._state[name] = views
            else:
                self._state[name] = {k: np.zeros_like(params[k]) for k in keys}
        return keys

    def _lists(self, params, grads):
        keys = self._ensure_state(params)
        missing = [k for k in keys if k not in grads]
        if missing:
            raise KeyError(f"grads has no entry for parameter(s) {missing}")
        p = [params[k] for k in keys]
        g = [grads[k] for k in keys]
        return p, g, [[self._state[name][k] for k in keys] for name in self._state_names]

    def update(self, params, grads):
        if not all(isinstance(v, np.ndarray) for v in params.values()):
            return self._update_scalars(params, grads)
        p, g, states = self._lists(params, grads)
        self._step(p, g, states)

    def _step(self, p, g, states):
        # The step counter moves only when the kernel accepted its arguments, so a
        # rejected update does not shift Adam's bias correction.
        self.step_count += 1
        try:
            self._apply(p, g, *states)
        except BaseException:
            self.step_count -= 1
            raise

    def _update_scalars(self, params, grads):
        """The book's ch. 6 demos keep Python floats in ``params`` and rebind them;
        box them as float64 0-d arrays, update, and write the new values back."""
        boxed = {k: (np.array(v, dtype=np.float64) if not isinstance(v, np.ndarray) else v)
                 for k, v in params.items()}
        boxed_grads = {k: (grads[k] if isinstance(grads.get(k), np.ndarray)
                           else np.asarray(grads[k], dtype=boxed[k].dtype))
                       for k in params if k in grads}
        p, g, states = self._lists(boxed, boxed_grads)
        self._step(p, g, states)
        for k, v in params.items():
            if not isinstance(v, np.ndarray):
                params[k] = boxed[k].item()

    def update_flat(self, params, flat_params, flat_grads):
        """The same update as ``update(params, grads)`` when ``params`` are consecutive
        views of ``flat_params`` and the gradients sit in ``flat_grads`` in the same
        layout: one kernel call over one array per buffer."""
        self._ensure_state(params)
        if len(self._flat_state) != len(self._state_names):
            raise ValueError("update_flat needs parameters of a single dtype")
        self._step([flat_params], [flat_grads],
                   [[self._flat_state[name]] for name in self._state_names])

    def _apply(self, p, g, *states):
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and k != "step_count"}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat name -> array mapping (for .npz checkpoints)."""
        out = {"step_count": np.array(self.step_count, dtype=np.int64)}
        for name, per_key in self._state.items():
            for k, arr in per_key.items():
                out[f"{name}/{k}"] = arr
        return out

    def load_state_dict(self, state: dict, params: dict) -> None:
        """Restore state saved by :meth:`state_dict` for the given parameters."""
        staged = {}
        for name in self._state_names:
            for k, p in params.items():
                arr = state.get(f"{name}/{k}")
                if arr is None:
                    raise ValueError(f"optimizer state lacks {name}/{k}")
                arr = np.asarray(arr)
                if arr.shape != p.shape or arr.dtype.kind != "f":
                    raise ValueError(f"optimizer state {name}/{k} has shape {arr.shape} and "
                                     f"dtype {arr.dtype}; the parameter has {p.shape}")
                staged[name, k] = arr
        self._keys = None
        self._state = {}
        self._ensure_state(params)
        for (name, k), arr in staged.items():
            self._state[name][k][...] = arr
        self.step_count = int(state.get("step_count", 0))


class SGD(Optimizer):
    """p -= lr * g."""

    def __init__(self, lr=0.01):
        super().__init__(lr)

    def _apply(self, p, g):
        ops.sgd_update(p, g, self.lr)


class Momentum(Optimizer):
    """v = momentum*v - lr*g; p += v."""

    _state_names = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = momentum

    @property
    def v(self):
        return self._state.get("v")

    def _apply(self, p, g, v):
        ops.momentum_update(p, g, v, self.lr, self.momentum)


class Nesterov(Momentum):
    """Nesterov's accelerated gradient in the book's (corrected) form."""

    def _apply(self, p, g, v):
        ops.nesterov_update(p, g, v, self.lr, self.momentum)


class AdaGrad(Optimizer):
    """h += g*g; p -= lr*g / (sqrt(h) + eps)."""

    _state_names = ("h",)

    def __init__(self, lr=0.01, eps=1e-7):
        super().__init__(lr)
        self.eps = eps

    @property
    def h(self):
        return self._state.get("h")

    def _apply(self, p, g, h):
        ops.adagrad_update(p, g, h, self.lr, self.eps)


class RMSprop(AdaGrad):
    """h = decay_rate*h + (1-decay_rate)*g*g; p -= lr*g / (sqrt(h) + eps)."""

    def __init__(self, lr=0.01, decay_rate=0.99, eps=1e-7):
        super().__init__(lr, eps)
        self.decay_rate = decay_rate

    def _apply(self, p, g, h):
        ops.rmsprop_update(p, g, h, self.lr, self.decay_rate, self.eps)


class Adam(Optimizer):
    """The book's Adam (bias correction folded into the step size)."""

    _state_names = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
        super().__init__(lr)
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps

    @property
    def iter(self):
        """The book's name for the step counter."""
        return self.step_count

    @property
    def m(self):
        return self._state.get("m")

    @property
    def v(self):
        return self._state.get("v")

    def _apply(self, p, g, m, v):
        ops.adam_update(p, g, m, v, self.lr, self.beta1, self.beta2, self.step_count, self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p -= lr*weight_decay*p."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.01):
        super().__init__(lr, beta1, beta2, eps)
        self.weight_decay = weight_decay

    def _apply(self, p, g, m, v):
        ops.adamw_update(p, g, m, v, self.lr, self.beta1, self.beta2, self.step_count,
                         self.eps, self.weight_decay)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad,
              "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def make_optimizer(name_or_optimizer, **params) -> Optimizer:
    """An optimizer from its (case-insensitive) name and hyperparameters, or pass one through."""
    if isinstance(name_or_optimizer, Optimizer):
        return name_or_optimizer
    key = str(name_or_optimizer).lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name_or_optimizer!r}; choose one of "
                         f"{', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key](**params)
