"""The book's networks: MultiLayerNet, MultiLayerNetExtend, SimpleConvNet, DeepConvNet.

Same constructors, parameter keys (``W1, b1, ..., gamma1, beta1``), layer names and
methods as the book, plus ``dtype=`` (float32 by default; float64 gives the book's
numbers), ``seed=`` for the weights and dropout masks, and L1 / elastic-net decay
(``l1_lambda`` beside the book's L2 ``weight_decay_lambda``).
"""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from . import layers as L
from ._io import atomic_file
from ._arrays import as_float, make_rng, resolve_dtype
from .gradient import numerical_gradient as _numerical_gradient

__all__ = ["MultiLayerNet", "MultiLayerNetExtend", "SimpleConvNet", "DeepConvNet",
           "init_std", "atomic_savez", "load_npz"]

_ACTIVATIONS = {"relu": L.Relu, "sigmoid": L.Sigmoid, "tanh": L.Tanh}


def init_std(weight_init_std, fan_in: int) -> float:
    """The book's rule: a number is the std itself; 'relu'/'he' gives sqrt(2/fan_in),
    'sigmoid'/'xavier' gives sqrt(1/fan_in)."""
    if isinstance(weight_init_std, str):
        key = weight_init_std.lower()
        if key in ("relu", "he"):
            return float(np.sqrt(2.0 / fan_in))
        if key in ("sigmoid", "xavier"):
            return float(np.sqrt(1.0 / fan_in))
        raise ValueError(f"weight_init_std must be a number, 'he'/'relu' or "
                         f"'xavier'/'sigmoid', got {weight_init_std!r}")
    std = float(weight_init_std)
    if not np.isfinite(std) or std < 0:
        raise ValueError(f"weight_init_std must be a finite number >= 0, got {weight_init_std!r}")
    return std


def atomic_savez(path, arrays: dict) -> str:
    """Write ``arrays`` to ``path`` (.npz) atomically, so a crash never leaves a
    half-written file."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    with atomic_file(path, "wb", suffix=".npz") as fh:
        np.savez(fh, **arrays)
    return path


def load_npz(path) -> dict:
    """Read an .npz without ever unpickling (object arrays are refused)."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as exc:
        raise ValueError(f"{path}: not a plain .npz of numeric arrays ({exc})") from None


class Network:
    """What every network shares: the layer stack, loss, accuracy, gradients, saving.

    Subclasses fill ``params`` (name -> array), ``layers`` (name -> layer, in order),
    ``last_layer`` and ``_param_owner`` (param name -> (layer name, attribute)).
    """

    def __init__(self, dtype, seed):
        self.dtype = resolve_dtype(dtype)
        self.rng = make_rng(seed)
        self.params: dict[str, np.ndarray] = {}
        self.layers: OrderedDict = OrderedDict()
        self.last_layer = L.SoftmaxWithLoss()
        self._param_owner: dict[str, tuple[str, str]] = {}
        self.weight_decay_lambda = 0.0
        self.l1_lambda = 0.0

    # -- construction helpers
    def _gaussian(self, shape, std) -> np.ndarray:
        # Drawn in float64 then cast, so float32 and float64 nets with one seed match.
        return (std * self.rng.standard_normal(shape)).astype(self.dtype)

    def _add_param(self, name, value, layer_name, attr):
        self.params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        self._param_owner[name] = (layer_name, attr)

    def _link(self):
        """Move the parameters into one contiguous buffer and point every layer at its view.

        ``params[k]`` stays an ordinary array (a view of ``flat_params``), so the book's
        API sees nothing new, while :meth:`train_step` can hand the optimizer one buffer
        of parameters and one of gradients."""
        total = sum(p.size for p in self.params.values())
        self.flat_params = np.empty(total, dtype=self.dtype)
        self.flat_grads = np.zeros(total, dtype=self.dtype)
        self._grad_views = {}
        offset = 0
        for name, p in self.params.items():
            view = self.flat_params[offset:offset + p.size].reshape(p.shape)
            view[...] = p
            self.params[name] = view
            self._grad_views[name] = self.flat_grads[offset:offset + p.size].reshape(p.shape)
            offset += p.size
        for name, (layer_name, attr) in self._param_owner.items():
            setattr(self.layers[layer_name], attr, self.params[name])

    # -- the fast path's layer sequence
    def _steps(self) -> list:
        """The layers as train_step and inference run them: each Convolution - Relu -
        max Pooling run becomes one fused L.ConvReluPool and each Affine -
        BatchNormalization - Relu one L.AffineBNReLU, over the same layer objects.
        Rebuilt whenever ``layers`` changes."""
        key = tuple((name, id(layer)) for name, layer in self.layers.items())
        if getattr(self, "_steps_key", None) != key:
            layers = list(self.layers.values())
            steps, i = [], 0
            while i < len(layers):
                kinds = tuple(type(layer) for layer in layers[i:i + 3])
                if kinds == (L.Convolution, L.Relu, L.Pooling):
                    steps.append(L.ConvReluPool(layers[i], layers[i + 2]))
                    i += 3
                elif kinds == (L.Affine, L.BatchNormalization, L.Relu):
                    steps.append(L.AffineBNReLU(*layers[i:i + 3]))
                    i += 3
                else:
                    steps.append(layers[i])
                    i += 1
            self._steps_list, self._steps_key = steps, key
        return self._steps_list

    @staticmethod
    def _forward(layers, x, train_flg):
        for layer in layers:
            x = layer.forward(x, train_flg) if layer.train_dependent else layer.forward(x)
        return x

    # -- the book's API
    def predict(self, x, train_flg=False):
        # Training-mode forwards go layer by layer, so that the book's layer-by-layer
        # backward finds every layer's state; inference may take the fused steps.
        layers = self.layers.values() if train_flg else self._steps()
        return self._forward(layers, as_float(x, self.dtype), train_flg)

    def _decay_weights(self):
        return [self.params[k] for k in self.params if k.startswith("W")]

    def regularization_loss(self) -> float:
        """0.5*lambda2*sum(W^2) + lambda1*sum(|W|) over the weight matrices."""
        total = 0.0
        for W in self._decay_weights():
            if self.weight_decay_lambda:
                total += 0.5 * self.weight_decay_lambda * float(np.sum(W * W, dtype=np.float64))
            if self.l1_lambda:
                total += self.l1_lambda * float(np.sum(np.abs(W), dtype=np.float64))
        return total

    def loss(self, x, t, train_flg=False):
        y = self.predict(x, train_flg)
        return self.last_layer.forward(y, t) + self.regularization_loss()

    def accuracy(self, x, t, batch_size=100):
        """Fraction of samples whose highest score is their label (t: labels or one-hot)."""
        t = np.asarray(t)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        n = x.shape[0]
        if n == 0:
            return 0.0
        correct = 0
        step = batch_size or n
        for i in range(0, n, step):
            y = self.predict(x[i:i + step], train_flg=False)
            correct += int(np.sum(np.argmax(y, axis=1) == t[i:i + step]))
        return correct / n

    def _backward(self, dout=1):
        dout = self.last_layer.backward(dout)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        return dout

    def _layer_grads(self):
        """(name, gradient from its layer) for every parameter, after a backward pass."""
        for name, (layer_name, attr) in self._param_owner.items():
            yield name, getattr(self.layers[layer_name], "d" + attr)

    def _add_decay_grad(self, name, g):
        """g += d(regularisation)/dW in place, for weight matrices."""
        if name.startswith("W") and (self.weight_decay_lambda or self.l1_lambda):
            W = self.params[name]
            if self.weight_decay_lambda:
                g += self.dtype.type(self.weight_decay_lambda) * W
            if self.l1_lambda:
                g += self.dtype.type(self.l1_lambda) * np.sign(W)

    def gradient(self, x, t):
        """Backpropagated gradients of ``loss(x, t, train_flg=True)``, keyed like params."""
        self.loss(x, t, train_flg=True)
        self._backward()
        grads = {}
        decay = self.weight_decay_lambda or self.l1_lambda
        for name, g in self._layer_grads():
            if decay and name.startswith("W"):
                g = g.copy()  # the layer keeps its own dW
                self._add_decay_grad(name, g)
            grads[name] = g
        return grads

    def train_step(self, x, t, optimizer):
        """One iteration - forward, backward, update - returning the batch's loss.

        Equal to ``optimizer.update(params, gradient(x, t))``, but Convolution - Relu -
        Pooling and Affine - BatchNormalization - Relu run fused (:meth:`_steps`), the
        first layer skips its input gradient, the gradients are gathered into
        ``flat_grads`` and an optimizer that supports it updates every parameter in one
        kernel call over ``flat_params``."""
        steps = self._steps()
        y = self._forward(steps, as_float(x, self.dtype), True)
        loss = self.last_layer.forward(y, t) + self.regularization_loss()
        dout = self.last_layer.backward(1)
        for i in range(len(steps) - 1, 0, -1):
            dout = steps[i].backward(dout)
        if steps:
            # nobody uses the gradient of the network's input
            if steps[0].input_grad_optional:
                steps[0].backward(dout, need_dx=False)
            else:
                steps[0].backward(dout)
        decay = self.weight_decay_lambda or self.l1_lambda
        views = self._grad_views
        for name, g in self._layer_grads():
            view = views[name]
            view[...] = g
            if decay:
                self._add_decay_grad(name, view)
        update_flat = getattr(optimizer, "update_flat", None)
        if update_flat is not None:
            update_flat(self.params, self.flat_params, self.flat_grads)
        else:
            optimizer.update(self.params, self._grad_views)
        return loss

    def numerical_gradient(self, x, t):
        """Central-difference gradients of the training loss (slow; for checking)."""
        def loss_w(_):
            return self.loss(x, t, train_flg=True)
        return {k: _numerical_gradient(loss_w, p) for k, p in self.params.items()}

    # -- state
    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state: running statistics of the batch-norm layers."""
        out = {}
        for name, layer in self.layers.items():
            for attr in ("running_mean", "running_var"):
                value = getattr(layer, attr, None)
                if value is not None:
                    out[f"{name}.{attr}"] = value
        return out

    def save_params(self, file_name="params.npz") -> str:
        """Parameters and running statistics to an .npz file, written atomically."""
        arrays = dict(self.params)
        arrays.update({f"buffer:{k}": v for k, v in self.buffers().items()})
        return atomic_savez(file_name, arrays)

    def load_params(self, file_name="params.npz") -> None:
        """Load an .npz from :meth:`save_params` into this network, in place.

        Every parameter must be present with its exact shape and a float dtype; nothing
        is changed unless all of them are valid.
        """
        data = load_npz(file_name)
        staged = {}
        for k, p in self.params.items():
            if k not in data:
                raise ValueError(f"{file_name}: missing parameter {k!r}")
            v = data[k]
            if v.dtype.kind != "f":
                raise ValueError(f"{file_name}: parameter {k!r} has dtype {v.dtype}, expected float")
            if v.shape != p.shape:
                raise ValueError(f"{file_name}: parameter {k!r} has shape {v.shape}, "
                                 f"expected {p.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{file_name}: parameter {k!r} holds NaN or infinity")
            staged[k] = v
        unknown = [k for k in data if k not in self.params and not k.startswith("buffer:")]
        if unknown:
            raise ValueError(f"{file_name}: unexpected arrays {unknown}")
        buffers = self._check_buffers(
            {k[len("buffer:"):]: v for k, v in data.items() if k.startswith("buffer:")},
            file_name)
        for k, v in staged.items():
            self.params[k][...] = v  # in place: layers and flat_params share the arrays
        self._set_buffers(buffers)

    def _check_buffers(self, buffers: dict, source) -> dict:
        """Validate saved running statistics ('Layer.attr' -> array) against this network."""
        checked = {}
        for key, v in buffers.items():
            layer_name, _, attr = key.rpartition(".")
            layer = self.layers.get(layer_name)
            if not hasattr(layer, "running_mean") or attr not in ("running_mean", "running_var"):
                raise ValueError(f"{source}: unexpected buffer {key!r}")
            # Running statistics have one entry per normalised feature, like gamma.
            expected = layer.gamma.shape
            if v.dtype.kind != "f" or v.shape != expected:
                raise ValueError(f"{source}: buffer {key!r} has shape {v.shape} and dtype "
                                 f"{v.dtype}, expected a float vector of shape {expected}")
            if not np.all(np.isfinite(v)) or (attr == "running_var" and np.any(v < 0)):
                raise ValueError(f"{source}: buffer {key!r} holds invalid values")
            checked[layer_name, attr] = v
        return checked

    def _set_buffers(self, checked: dict) -> None:
        for (layer_name, attr), v in checked.items():
            setattr(self.layers[layer_name], attr, np.array(v, dtype=self.dtype))


class MultiLayerNet(Network):
    """Fully connected net: (Affine - activation) x hidden layers - Affine - softmax."""

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, *, l1_lambda=0,
                 dtype=np.float32, seed=None):
        super().__init__(dtype, seed)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(_ACTIVATIONS)}, got {activation!r}")
        self.input_size = input_size
        self.hidden_size_list = list(hidden_size_list)
        self.hidden_layer_num = len(self.hidden_size_list)
        self.output_size = output_size
        self.weight_decay_lambda = float(weight_decay_lambda)
        self.l1_lambda = float(l1_lambda)
        self._build(activation, weight_init_std)
        self._link()

    def _hidden_extra(self, idx, size):
        """Layers placed after hidden Affine ``idx``, before its activation (none here)."""

    def _after_activation(self, idx):
        """Layers placed after hidden activation ``idx`` (none here)."""

    def _build(self, activation, weight_init_std):
        sizes = [self.input_size] + self.hidden_size_list + [self.output_size]
        for idx in range(1, len(sizes)):
            fan_in, fan_out = sizes[idx - 1], sizes[idx]
            std = init_std(weight_init_std, fan_in)
            W = self._gaussian((fan_in, fan_out), std)
            b = np.zeros(fan_out, dtype=self.dtype)
            self.layers[f"Affine{idx}"] = L.Affine(W, b)
            self._add_param(f"W{idx}", W, f"Affine{idx}", "W")
            self._add_param(f"b{idx}", b, f"Affine{idx}", "b")
            if idx < len(sizes) - 1:
                self._hidden_extra(idx, fan_out)
                self.layers[f"Activation_function{idx}"] = _ACTIVATIONS[activation]()
                self._after_activation(idx)


class MultiLayerNetExtend(MultiLayerNet):
    """MultiLayerNet with optional BatchNorm (before each activation) and Dropout (after)."""

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False, *, l1_lambda=0,
                 dtype=np.float32, seed=None):
        self.use_dropout = use_dropout
        self.dropout_ration = dropout_ration
        self.use_batchnorm = use_batchnorm
        super().__init__(input_size, hidden_size_list, output_size, activation,
                         weight_init_std, weight_decay_lambda, l1_lambda=l1_lambda,
                         dtype=dtype, seed=seed)

    def _hidden_extra(self, idx, size):
        if self.use_batchnorm:
            gamma = np.ones(size, dtype=self.dtype)
            beta = np.zeros(size, dtype=self.dtype)
            self.layers[f"BatchNorm{idx}"] = L.BatchNormalization(gamma, beta)
            self._add_param(f"gamma{idx}", gamma, f"BatchNorm{idx}", "gamma")
            self._add_param(f"beta{idx}", beta, f"BatchNorm{idx}", "beta")

    def _after_activation(self, idx):
        if self.use_dropout:
            self.layers[f"Dropout{idx}"] = L.Dropout(self.dropout_ration, rng=self.rng)


def _conv_out(size, filter_size, stride, pad):
    out = (size + 2 * pad - filter_size) // stride + 1
    if out < 1:
        raise ValueError(f"a {filter_size}-wide filter with stride {stride} and pad {pad} "
                         f"does not fit an input of size {size}")
    return out


class SimpleConvNet(Network):
    """Conv - ReLU - Pool(2x2, stride 2) - Affine - ReLU - Affine - softmax."""

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
                 hidden_size=100, output_size=10, weight_init_std=0.01, *,
                 dtype=np.float32, seed=None):
        super().__init__(dtype, seed)
        filter_num = conv_param["filter_num"]
        filter_size = conv_param["filter_size"]
        pad = conv_param.get("pad", 0)
        stride = conv_param.get("stride", 1)
        c, h, w = input_dim
        conv_h = _conv_out(h, filter_size, stride, pad)
        conv_w = _conv_out(w, filter_size, stride, pad)
        pool_size = filter_num * (conv_h // 2) * (conv_w // 2)
        if pool_size < 1:
            raise ValueError("the convolution output is too small for 2x2 pooling")

        def std(fan_in):
            return init_std(weight_init_std, fan_in)

        self._add_param("W1", self._gaussian((filter_num, c, filter_size, filter_size),
                                             std(c * filter_size * filter_size)),
                        "Conv1", "W")
        self._add_param("b1", np.zeros(filter_num), "Conv1", "b")
        self._add_param("W2", self._gaussian((pool_size, hidden_size), std(pool_size)),
                        "Affine1", "W")
        self._add_param("b2", np.zeros(hidden_size), "Affine1", "b")
        self._add_param("W3", self._gaussian((hidden_size, output_size), std(hidden_size)),
                        "Affine2", "W")
        self._add_param("b3", np.zeros(output_size), "Affine2", "b")
        p = self.params
        self.layers["Conv1"] = L.Convolution(p["W1"], p["b1"], stride, pad)
        self.layers["Relu1"] = L.Relu()
        self.layers["Pool1"] = L.Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = L.Affine(p["W2"], p["b2"])
        self.layers["Relu2"] = L.Relu()
        self.layers["Affine2"] = L.Affine(p["W3"], p["b3"])
        self._link()


class DeepConvNet(Network):
    """The book's ch. 8 net: six 3x3 convolutions with ReLU (a 2x2 max pool after every
    second one), Affine - ReLU - Dropout - Affine - Dropout - softmax; He init."""

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1={"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_2={"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_3={"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_4={"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
                 conv_param_5={"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_6={"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
                 hidden_size=50, output_size=10, *, dropout_ratio=0.5,
                 dtype=np.float32, seed=None):
        super().__init__(dtype, seed)
        convs = [conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
                 conv_param_6]
        channels, h, w = input_dim
        layer_names = []
        for i, cp in enumerate(convs, start=1):
            fs, pad, stride = cp["filter_size"], cp.get("pad", 0), cp.get("stride", 1)
            fan_in = channels * fs * fs
            W = self._gaussian((cp["filter_num"], channels, fs, fs), np.sqrt(2.0 / fan_in))
            self._add_param(f"W{i}", W, f"Conv{i}", "W")
            self._add_param(f"b{i}", np.zeros(cp["filter_num"]), f"Conv{i}", "b")
            self.layers[f"Conv{i}"] = L.Convolution(self.params[f"W{i}"],
                                                    self.params[f"b{i}"], stride, pad)
            self.layers[f"Relu{i}"] = L.Relu()
            h, w = _conv_out(h, fs, stride, pad), _conv_out(w, fs, stride, pad)
            channels = cp["filter_num"]
            if i % 2 == 0:
                self.layers[f"Pool{i // 2}"] = L.Pooling(pool_h=2, pool_w=2, stride=2)
                h, w = _conv_out(h, 2, 2, 0), _conv_out(w, 2, 2, 0)
            layer_names.append(f"Conv{i}")
        flat = channels * h * w
        self._add_param("W7", self._gaussian((flat, hidden_size), np.sqrt(2.0 / flat)),
                        "Affine1", "W")
        self._add_param("b7", np.zeros(hidden_size), "Affine1", "b")
        self._add_param("W8", self._gaussian((hidden_size, output_size),
                                             np.sqrt(2.0 / hidden_size)), "Affine2", "W")
        self._add_param("b8", np.zeros(output_size), "Affine2", "b")
        self.layers["Affine1"] = L.Affine(self.params["W7"], self.params["b7"])
        self.layers["Relu7"] = L.Relu()
        self.layers["Dropout1"] = L.Dropout(dropout_ratio, rng=self.rng)
        self.layers["Affine2"] = L.Affine(self.params["W8"], self.params["b8"])
        self.layers["Dropout2"] = L.Dropout(dropout_ratio, rng=self.rng)
        self._link()
