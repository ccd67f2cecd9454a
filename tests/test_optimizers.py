"""Every optimizer against its closed form (BOOK_API.md), on both backends.

Three steps over a dict of arrays of different shapes, in float32 and float64; state
created lazily in the parameters' dtype; updates in place; state_dict round trip;
make_optimizer; and the book's 2-D toy problem f(x, y) = x^2/20 + y^2.
"""
from __future__ import annotations

import io

import numpy as np
import pytest

from zerodl.optimizers import (OPTIMIZERS, SGD, AdaGrad, Adam, AdamW, Momentum, Nesterov,
                               Optimizer, RMSprop, make_optimizer)

# Tolerances, one table per dtype: the optimizer vs the closed form computed in float64
# from the same starting values and gradients.
TOL = {
    np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-14},
    np.dtype(np.float32): {"rtol": 2e-5, "atol": 1e-6},
}

SHAPES = {"W1": (3, 7), "b1": (7,), "W2": (2, 3, 4, 5), "s": (1,)}

# Non-default hyperparameters, so a default silently used instead would show.
HYPER = {
    SGD: {"lr": 0.1},
    Momentum: {"lr": 0.1, "momentum": 0.8},
    Nesterov: {"lr": 0.1, "momentum": 0.8},
    AdaGrad: {"lr": 0.2},
    RMSprop: {"lr": 0.05, "decay_rate": 0.9},
    Adam: {"lr": 0.01, "beta1": 0.8, "beta2": 0.95},
    AdamW: {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "weight_decay": 0.1},
}
ALL = list(HYPER)
STATE_ATTRS = {SGD: (), Momentum: ("v",), Nesterov: ("v",), AdaGrad: ("h",),
               RMSprop: ("h",), Adam: ("m", "v"), AdamW: ("m", "v")}


def closed_form(cls, p0: dict, grad_steps: list, hp: dict) -> dict:
    """The book's update rules written out, in float64."""
    p = {k: v.astype(np.float64) for k, v in p0.items()}
    state = {k: {"v": np.zeros_like(p[k]), "h": np.zeros_like(p[k]), "m": np.zeros_like(p[k])}
             for k in p}
    for t, grads in enumerate(grad_steps, start=1):
        for k in p:
            g, s = grads[k].astype(np.float64), state[k]
            if cls is SGD:
                p[k] = p[k] - hp["lr"] * g
            elif cls is Momentum:
                s["v"] = hp["momentum"] * s["v"] - hp["lr"] * g
                p[k] = p[k] + s["v"]
            elif cls is Nesterov:
                mu = hp["momentum"]
                p[k] = p[k] + mu * mu * s["v"]
                p[k] = p[k] - (1 + mu) * hp["lr"] * g
                s["v"] = mu * s["v"] - hp["lr"] * g
            elif cls is AdaGrad:
                s["h"] = s["h"] + g * g
                p[k] = p[k] - hp["lr"] * g / (np.sqrt(s["h"]) + 1e-7)
            elif cls is RMSprop:
                d = hp["decay_rate"]
                s["h"] = d * s["h"] + (1 - d) * g * g
                p[k] = p[k] - hp["lr"] * g / (np.sqrt(s["h"]) + 1e-7)
            else:  # Adam, AdamW
                if cls is AdamW:
                    p[k] = p[k] - hp["lr"] * hp["weight_decay"] * p[k]
                b1, b2 = hp["beta1"], hp["beta2"]
                lr_t = hp["lr"] * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                s["m"] = s["m"] + (1 - b1) * (g - s["m"])
                s["v"] = s["v"] + (1 - b2) * (g * g - s["v"])
                p[k] = p[k] - lr_t * s["m"] / (np.sqrt(s["v"]) + 1e-7)
    return p


def make_problem(dtype, seed=0, steps=3):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
    grads = [{k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
             for _ in range(steps)]
    return params, grads


DTYPES = [np.float64, np.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_matches_closed_form_over_three_steps(cls, dtype, backend):
    params, grads = make_problem(dtype)
    expected = closed_form(cls, params, grads, HYPER[cls])
    opt = cls(**HYPER[cls])
    for g in grads:
        opt.update(params, g)
    tol = TOL[np.dtype(dtype)]
    for k in params:
        assert params[k].dtype == dtype
        np.testing.assert_allclose(params[k], expected[k], **tol, err_msg=k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_state_is_lazy_in_parameter_dtype_and_update_in_place(cls, dtype, backend):
    params, grads = make_problem(dtype, seed=1)
    opt = cls(**HYPER[cls])
    for attr in STATE_ATTRS[cls]:
        assert getattr(opt, attr) is None, f"{attr} exists before the first update"
    ids = {k: id(v) for k, v in params.items()}
    before = {k: v.copy() for k, v in params.items()}
    opt.update(params, grads[0])
    assert {k: id(v) for k, v in params.items()} == ids, "params must be updated in place"
    for k in params:
        assert not np.array_equal(params[k], before[k]), k
    for attr in STATE_ATTRS[cls]:
        state = getattr(opt, attr)
        assert set(state) == set(params)
        for k in params:
            assert state[k].shape == params[k].shape and state[k].dtype == dtype, (attr, k)
    # grads are inputs: never modified
    params2, grads2 = make_problem(dtype, seed=1)
    opt2 = cls(**HYPER[cls])
    g_copy = {k: v.copy() for k, v in grads2[0].items()}
    opt2.update(params2, grads2[0])
    for k in g_copy:
        np.testing.assert_array_equal(grads2[0][k], g_copy[k])


def test_adam_counts_steps_like_the_book():
    params, grads = make_problem(np.float64)
    opt = Adam()
    for g in grads:
        opt.update(params, g)
    assert opt.iter == 3 == opt.step_count


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_book_defaults(cls):
    book = {SGD: {"lr": 0.01}, Momentum: {"lr": 0.01, "momentum": 0.9},
            Nesterov: {"lr": 0.01, "momentum": 0.9}, AdaGrad: {"lr": 0.01},
            RMSprop: {"lr": 0.01, "decay_rate": 0.99},
            Adam: {"lr": 0.001, "beta1": 0.9, "beta2": 0.999},
            AdamW: {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.01}}[cls]
    hp = cls().hyperparameters()
    for k, v in book.items():
        assert hp[k] == v, k


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_state_dict_round_trip_continues_identically(cls, dtype, backend):
    params, grads = make_problem(dtype, seed=2, steps=5)
    opt = cls(**HYPER[cls])
    for g in grads[:2]:
        opt.update(params, g)
    # Through an .npz, as a checkpoint would store it.
    buf = io.BytesIO()
    np.savez(buf, **opt.state_dict())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as data:
        saved = {k: data[k] for k in data.files}
    params2 = {k: v.copy() for k, v in params.items()}
    opt2 = cls(**HYPER[cls])
    opt2.load_state_dict(saved, params2)
    assert opt2.step_count == 2
    for g in grads[2:]:
        opt.update(params, g)
        opt2.update(params2, g)
    for k in params:
        np.testing.assert_array_equal(params2[k], params[k], err_msg=k)
    for attr in STATE_ATTRS[cls]:
        for k in params:
            assert getattr(opt2, attr)[k].dtype == dtype
            np.testing.assert_array_equal(getattr(opt2, attr)[k], getattr(opt, attr)[k])


def test_load_state_dict_rejects_missing_or_misshapen_state():
    params, grads = make_problem(np.float64)
    opt = Adam()
    opt.update(params, grads[0])
    state = opt.state_dict()
    missing = {k: v for k, v in state.items() if k != "m/W1"}
    with pytest.raises(ValueError, match="m/W1"):
        Adam().load_state_dict(missing, params)
    bad = dict(state, **{"v/b1": np.zeros(3)})
    with pytest.raises(ValueError, match="v/b1"):
        Adam().load_state_dict(bad, params)


@pytest.mark.parametrize("cls", [Adam, AdamW], ids=lambda c: c.__name__)
def test_rejected_update_leaves_the_optimizer_unchanged(cls):
    params, grads = make_problem(np.float64)
    expected = closed_form(cls, params, grads, HYPER[cls])
    opt = cls(**HYPER[cls])
    bad = dict(grads[0], W1=np.zeros((7, 3)))  # wrong shape
    with pytest.raises(ValueError, match="grads"):
        opt.update(params, bad)
    assert opt.step_count == 0
    for g in grads:
        opt.update(params, g)
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], **TOL[np.dtype(np.float64)])


def test_parameter_names_may_not_change_between_updates():
    params, grads = make_problem(np.float64)
    opt = Momentum()
    opt.update(params, grads[0])
    renamed = {("X" + k): v for k, v in params.items()}
    with pytest.raises(ValueError, match="parameter names"):
        opt.update(renamed, {("X" + k): v for k, v in grads[1].items()})


# ---------------------------------------------------------------- make_optimizer

@pytest.mark.parametrize("name,cls", [
    ("sgd", SGD), ("SGD", SGD), ("Momentum", Momentum), ("MOMENTUM", Momentum),
    ("nesterov", Nesterov), ("Nesterov", Nesterov), ("adagrad", AdaGrad),
    ("AdaGrad", AdaGrad), ("rmsprop", RMSprop), ("RMSprop", RMSprop), ("adam", Adam),
    ("Adam", Adam), ("ADAM", Adam), ("adamw", AdamW), ("AdamW", AdamW),
])
def test_make_optimizer_is_case_insensitive(name, cls):
    opt = make_optimizer(name, lr=0.5)
    assert type(opt) is cls and opt.lr == 0.5


def test_make_optimizer_passes_instances_and_rejects_unknown_names():
    opt = Adam(lr=0.2)
    assert make_optimizer(opt) is opt
    assert set(OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam",
                               "adamw"}
    with pytest.raises(ValueError, match="unknown optimizer 'adamax'.*sgd"):
        make_optimizer("adamax")
    with pytest.raises(TypeError):
        make_optimizer("sgd", momentum=0.9)  # SGD has no momentum
    assert isinstance(make_optimizer("sgd"), Optimizer)


# ---------------------------------------------------------------- the book's toy problem

def _f(x, y):
    return x ** 2 / 20.0 + y ** 2


@pytest.mark.parametrize("cls,lr,monotone", [
    (SGD, 0.95, True), (Momentum, 0.1, False), (AdaGrad, 1.5, True), (Adam, 0.3, False),
], ids=["SGD", "Momentum", "AdaGrad", "Adam"])
def test_book_toy_problem_converges(cls, lr, monotone, backend):
    """ch06 optimizer_compare_naive: 30 steps from (-7, 2) with the book's learning rates."""
    params = {"x": np.array(-7.0), "y": np.array(2.0)}
    opt = cls(lr=lr)
    values = [_f(params["x"], params["y"])]
    for _ in range(30):
        grads = {"x": np.asarray(params["x"] / 10.0), "y": np.asarray(2.0 * params["y"])}
        opt.update(params, grads)
        values.append(float(_f(params["x"], params["y"])))
    values = np.array(values)
    assert values[-1] < values[0] / 50, values[-1]
    assert values.max() <= values[0]
    assert values[-1] < values[10] < values[0]
    if monotone:
        assert np.all(np.diff(values) <= 0)


def test_book_naive_script_with_python_floats():
    params = {"x": -7.0, "y": 2.0}
    grads = {"x": 0, "y": 0}
    opt = SGD(lr=0.95)
    for _ in range(30):
        grads["x"], grads["y"] = params["x"] / 10.0, 2.0 * params["y"]
        opt.update(params, grads)
    assert _f(params["x"], params["y"]) < 6.45 / 50
