"""The book's ch. 6 scripts, imports swapped for zerodl's, run unchanged.

The script below is written the way the book's ``ch06/*.py`` are (optimizer comparison,
weight-init comparison, batch-norm test, weight decay, Trainer with dropout,
hyperparameter search) plus the small ch. 3/4/7 helper calls.  Only the import lines
differ from the book.  It runs in a fresh interpreter on 1000 MNIST training images for
~100 iterations; it must learn: losses fall and test accuracy exceeds 0.6.
"""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from conftest import REPO, run_python, subprocess_env

MNIST_DIR = REPO / "data" / "mnist"

BOOK_SCRIPT = textwrap.dedent('''
    # coding: utf-8
    import json
    import numpy as np
    from zerodl.layers import *
    from zerodl.optimizers import *
    from zerodl.nets import MultiLayerNet, MultiLayerNetExtend
    from zerodl.trainer import Trainer
    from zerodl.datasets import load_mnist
    from zerodl.util import smooth_curve, shuffle_dataset, im2col
    from zerodl.functions import softmax, cross_entropy_error
    from zerodl.gradient import numerical_gradient

    np.random.seed(0)
    results = {}

    # ---- ch03 / ch04: softmax, cross_entropy_error, numerical_gradient
    a = np.array([0.3, 2.9, 4.0])
    y = softmax(a)
    results["softmax_sum"] = float(np.sum(y))
    t = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    y = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]
    results["cee"] = float(cross_entropy_error(np.array(y), np.array(t)))

    def function_2(x):
        return x[0]**2 + x[1]**2

    results["numgrad"] = numerical_gradient(function_2, np.array([3.0, 4.0])).tolist()

    # ---- ch07: im2col
    x1 = np.random.rand(1, 3, 7, 7)
    col1 = im2col(x1, 5, 5, stride=1, pad=0)
    x2 = np.random.rand(10, 3, 7, 7)
    col2 = im2col(x2, 5, 5, stride=1, pad=0)
    results["im2col"] = [list(col1.shape), list(col2.shape)]

    # ---- ch06: optimizer_compare_mnist.py
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=True)
    x_train = x_train[:1000]
    t_train = t_train[:1000]
    x_test = x_test[:1000]
    t_test = t_test[:1000]

    train_size = x_train.shape[0]
    batch_size = 128
    max_iterations = 100

    optimizers = {}
    optimizers['SGD'] = SGD()
    optimizers['Momentum'] = Momentum()
    optimizers['AdaGrad'] = AdaGrad()
    optimizers['Adam'] = Adam()
    #optimizers['RMSprop'] = RMSprop()

    networks = {}
    train_loss = {}
    for key in optimizers.keys():
        networks[key] = MultiLayerNet(
            input_size=784, hidden_size_list=[100, 100, 100, 100],
            output_size=10)
        train_loss[key] = []

    for i in range(max_iterations):
        batch_mask = np.random.choice(train_size, batch_size)
        x_batch = x_train[batch_mask]
        t_batch = t_train[batch_mask]

        for key in optimizers.keys():
            grads = networks[key].gradient(x_batch, t_batch)
            optimizers[key].update(networks[key].params, grads)

            loss = networks[key].loss(x_batch, t_batch)
            train_loss[key].append(loss)

        if i % 50 == 0:
            print( "===========" + "iteration:" + str(i) + "===========")
            for key in optimizers.keys():
                loss = networks[key].loss(x_batch, t_batch)
                print(key + ":" + str(loss))

    results["optimizers"] = {}
    for key in optimizers.keys():
        smooth = smooth_curve(train_loss[key])
        results["optimizers"][key] = {
            "first": float(np.mean(train_loss[key][:10])),
            "last": float(np.mean(train_loss[key][-10:])),
            "smooth_len": len(smooth), "n": len(train_loss[key]),
            "acc": float(networks[key].accuracy(x_test, t_test)),
        }

    # ---- ch06: weight_init_compare.py
    weight_init_types = {'std=0.01': 0.01, 'Xavier': 'sigmoid', 'He': 'relu'}
    optimizer = SGD(lr=0.01)

    networks = {}
    train_loss = {}
    for key, weight_type in weight_init_types.items():
        networks[key] = MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100],
                                      output_size=10, weight_init_std=weight_type)
        train_loss[key] = []

    for i in range(max_iterations):
        batch_mask = np.random.choice(train_size, batch_size)
        x_batch = x_train[batch_mask]
        t_batch = t_train[batch_mask]

        for key in weight_init_types.keys():
            grads = networks[key].gradient(x_batch, t_batch)
            optimizer.update(networks[key].params, grads)

            loss = networks[key].loss(x_batch, t_batch)
            train_loss[key].append(loss)

    results["weight_init"] = {key: [float(np.mean(v[:10])), float(np.mean(v[-10:]))]
                              for key, v in train_loss.items()}

    # ---- ch06: batch_norm_test.py (one optimizer shared by two networks)
    learning_rate = 0.01

    def __train(weight_init_std):
        bn_network = MultiLayerNetExtend(input_size=784, hidden_size_list=[100, 100, 100, 100, 100], output_size=10,
                                        weight_init_std=weight_init_std, use_batchnorm=True)
        network = MultiLayerNetExtend(input_size=784, hidden_size_list=[100, 100, 100, 100, 100], output_size=10,
                                    weight_init_std=weight_init_std)
        optimizer = SGD(lr=learning_rate)

        train_acc_list = []
        bn_train_acc_list = []

        iter_per_epoch = max(train_size / batch_size, 1)
        epoch_cnt = 0

        for i in range(1000000000):
            batch_mask = np.random.choice(train_size, batch_size)
            x_batch = x_train[batch_mask]
            t_batch = t_train[batch_mask]

            for _network in (bn_network, network):
                grads = _network.gradient(x_batch, t_batch)
                optimizer.update(_network.params, grads)

            if i % iter_per_epoch == 0:
                train_acc = network.accuracy(x_train, t_train)
                bn_train_acc = bn_network.accuracy(x_train, t_train)
                train_acc_list.append(train_acc)
                bn_train_acc_list.append(bn_train_acc)

                epoch_cnt += 1
                if epoch_cnt >= max_epochs:
                    break

        return train_acc_list, bn_train_acc_list

    max_epochs = 4
    train_acc_list, bn_train_acc_list = __train(0.05)
    results["batchnorm"] = {"plain": train_acc_list, "bn": bn_train_acc_list}

    # ---- ch06: overfit_weight_decay.py
    weight_decay_lambda = 0.1
    x_small, t_small = x_train[:300], t_train[:300]
    network = MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100, 100, 100], output_size=10,
                            weight_decay_lambda=weight_decay_lambda)
    optimizer = SGD(lr=0.01)
    for i in range(30):
        batch_mask = np.random.choice(300, 100)
        grads = network.gradient(x_small[batch_mask], t_small[batch_mask])
        optimizer.update(network.params, grads)
    results["weight_decay_loss"] = float(network.loss(x_small, t_small))

    # ---- ch06: overfit_dropout.py
    use_dropout = True
    dropout_ratio = 0.2
    network = MultiLayerNetExtend(input_size=784, hidden_size_list=[100, 100, 100, 100, 100, 100],
                                  output_size=10, use_dropout=use_dropout, dropout_ration=dropout_ratio)
    trainer = Trainer(network, x_small, t_small, x_test, t_test,
                      epochs=3, mini_batch_size=100,
                      optimizer='sgd', optimizer_param={'lr': 0.01}, verbose=True)
    trainer.train()
    train_acc_list, test_acc_list = trainer.train_acc_list, trainer.test_acc_list
    results["dropout_trainer"] = [len(train_acc_list), len(test_acc_list)]

    # ---- ch06: hyperparameter_optimization.py (two trials)
    x_train, t_train = shuffle_dataset(x_train, t_train)
    validation_rate = 0.20
    validation_num = int(x_train.shape[0] * validation_rate)
    x_val = x_train[:validation_num]
    t_val = t_train[:validation_num]
    x_train = x_train[validation_num:]
    t_train = t_train[validation_num:]

    def __train(lr, weight_decay, epocs=2):
        network = MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100, 100, 100],
                                output_size=10, weight_decay_lambda=weight_decay)
        trainer = Trainer(network, x_train, t_train, x_val, t_val,
                          epochs=epocs, mini_batch_size=100,
                          optimizer='sgd', optimizer_param={'lr': lr}, verbose=False)
        trainer.train()
        return trainer.test_acc_list, trainer.train_acc_list

    results["hyper"] = []
    for _ in range(2):
        weight_decay = 10 ** np.random.uniform(-8, -4)
        lr = 10 ** np.random.uniform(-6, -2)
        val_acc_list, train_acc_list = __train(lr, weight_decay)
        results["hyper"].append(len(val_acc_list))

    print("RESULTS " + json.dumps(results))
''')


@pytest.fixture(scope="module")
def book_run():
    code = "import zerodl.datasets"
    probe = run_python(["-c", code])
    if probe.returncode != 0:
        pytest.skip(f"zerodl.datasets does not import yet: {probe.stderr.strip()[-300:]}")
    if not MNIST_DIR.is_dir():
        pytest.skip("data/mnist is missing")
    env = subprocess_env(ZERODL_DATA=str(MNIST_DIR))
    proc = run_python(["-c", BOOK_SCRIPT], env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS "):]), proc.stdout


def test_helpers_give_the_books_numbers(book_run):
    r, _ = book_run
    assert r["softmax_sum"] == pytest.approx(1.0)
    assert r["cee"] == pytest.approx(0.510825457099338, rel=1e-6)
    assert r["numgrad"] == pytest.approx([6.0, 8.0], abs=1e-6)
    assert r["im2col"] == [[9, 75], [90, 75]]


def test_optimizer_comparison_learns(book_run):
    r, stdout = book_run
    assert "===========iteration:0===========" in stdout
    for key, res in r["optimizers"].items():
        assert res["n"] == 100 and res["smooth_len"] == 100
        assert res["last"] < res["first"], key
    # the book's figure: the adaptive ones learn fast; SGD(0.01) is slow
    for key in ("Momentum", "AdaGrad", "Adam"):
        assert r["optimizers"][key]["acc"] > 0.6, (key, r["optimizers"][key])
        assert r["optimizers"][key]["last"] < 0.7 * r["optimizers"][key]["first"], key
    assert max(res["acc"] for res in r["optimizers"].values()) > 0.6


def test_weight_init_comparison(book_run):
    r, _ = book_run
    first, last = r["weight_init"]["He"]
    assert last < 0.9 * first  # typically ~0.6-0.75: the weights are drawn afresh each run
    assert last < r["weight_init"]["std=0.01"][1] - 0.2
    # std=0.01 barely moves off log(10) in 100 iterations (the book's flat curve)
    first, last = r["weight_init"]["std=0.01"]
    assert abs(last - np.log(10)) < 0.05 and abs(first - np.log(10)) < 0.05


def test_batch_norm_shared_sgd_and_the_rest(book_run):
    r, stdout = book_run
    assert len(r["batchnorm"]["bn"]) == len(r["batchnorm"]["plain"]) == 4
    assert r["batchnorm"]["bn"][-1] > r["batchnorm"]["bn"][0]
    assert np.isfinite(r["weight_decay_loss"])
    assert r["dropout_trainer"] == [3, 3]
    assert "Final Test Accuracy" in stdout
    assert r["hyper"] == [2, 2]



