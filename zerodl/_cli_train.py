"""`zerodl train`: train one of the book's networks on MNIST."""
from __future__ import annotations

import json
import os
import time

import numpy as np

from ._cli_common import add_runtime_options, apply_runtime_options

MODELS = ("mlp", "mlp-bn", "convnet", "deepconvnet")
DEFAULT_EPOCHS = {"mlp": 5, "mlp-bn": 5, "convnet": 3, "deepconvnet": 2}


def configure(parser):
    parser.add_argument("--model", choices=MODELS, default="mlp-bn",
                        help="mlp: 784-100-100-100-10 ReLU; mlp-bn: the same with BatchNorm; "
                             "convnet: the book's SimpleConvNet; deepconvnet: ch. 8's net")
    parser.add_argument("--hidden", default="100,100,100",
                        help="hidden layer sizes of the MLPs (comma separated)")
    parser.add_argument("--activation", choices=("relu", "sigmoid", "tanh"), default="relu")
    parser.add_argument("--optimizer", default="adam",
                        choices=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam",
                                 "adamw"))
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default: 0.001 for adam/adamw, else 0.01)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs (default: mlp 5, convnet 3, deepconvnet 2)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--init", default=None,
                        help="weight init: he, xavier or a std (default: he; convnet 0.01 "
                             "as in the book)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="L2 lambda")
    parser.add_argument("--l1", type=float, default=0.0,
                        help="L1 lambda (with --weight-decay: elastic net)")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="dropout ratio after each hidden activation of the MLPs (0: off)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--train-size", type=int, default=None,
                        help="use only the first N training images")
    parser.add_argument("--val-split", type=float, default=0.0,
                        help="fraction of the training data held out for validation")
    parser.add_argument("--patience", type=int, default=None,
                        help="stop after this many epochs without a better validation accuracy")
    parser.add_argument("--eval-samples", type=int, default=10000,
                        help="training images scored each epoch for train accuracy (0: all)")
    parser.add_argument("--out", default=None, help="output folder (default runs/<model>)")
    parser.add_argument("--checkpoint", action="store_true",
                        help="save OUT/checkpoint.npz after every epoch")
    parser.add_argument("--resume", metavar="CHECKPOINT", default=None,
                        help="continue the run saved in CHECKPOINT (its settings win; "
                             "--epochs may extend it)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    add_runtime_options(parser)


def settings_from_args(args) -> dict:
    init = args.init or ("0.01" if args.model == "convnet" else "he")
    lr = args.lr if args.lr is not None else (0.001 if args.optimizer in ("adam", "adamw")
                                              else 0.01)
    return {
        "model": args.model,
        "hidden": [int(h) for h in str(args.hidden).split(",") if h.strip()],
        "activation": args.activation,
        "optimizer": args.optimizer,
        "lr": lr,
        "epochs": args.epochs or DEFAULT_EPOCHS[args.model],
        "batch_size": args.batch_size,
        "init": init,
        "weight_decay": args.weight_decay,
        "l1": args.l1,
        "dropout": args.dropout,
        "dtype": args.dtype,
        "train_size": args.train_size,
        "val_split": args.val_split,
        "patience": args.patience,
        "eval_samples": args.eval_samples,
        "seed": args.seed,
    }


def _init_value(init: str):
    try:
        return float(init)
    except ValueError:
        return init


def build_network(s: dict):
    from .nets import DeepConvNet, MultiLayerNetExtend, SimpleConvNet

    dtype = np.dtype(s["dtype"])
    if s["model"] in ("mlp", "mlp-bn"):
        return MultiLayerNetExtend(
            784, s["hidden"], 10, activation=s["activation"],
            weight_init_std=_init_value(s["init"]), weight_decay_lambda=s["weight_decay"],
            use_dropout=s["dropout"] > 0, dropout_ration=s["dropout"] or 0.5,
            use_batchnorm=s["model"] == "mlp-bn", l1_lambda=s["l1"], dtype=dtype,
            seed=s["seed"])
    if s["model"] == "convnet":
        return SimpleConvNet(weight_init_std=_init_value(s["init"]), dtype=dtype,
                             seed=s["seed"])
    return DeepConvNet(dtype=dtype, seed=s["seed"])


def build_trainer(s: dict, data_dir=None, verbose=True, progress=None):
    from .datasets import load_mnist
    from .trainer import Trainer

    flat = s["model"] in ("mlp", "mlp-bn")
    (x_train, t_train), (x_test, t_test) = load_mnist(flatten=flat, data_dir=data_dir,
                                                      dtype=np.dtype(s["dtype"]))
    if s["train_size"]:
        x_train, t_train = x_train[:s["train_size"]], t_train[:s["train_size"]]
    net = build_network(s)
    return Trainer(net, x_train, t_train, x_test, t_test, epochs=s["epochs"],
                   mini_batch_size=s["batch_size"], optimizer=s["optimizer"],
                   optimizer_param={"lr": s["lr"]},
                   evaluate_sample_num_per_epoch=s["eval_samples"] or None,
                   verbose=verbose, validation_split=s["val_split"],
                   patience=s["patience"], seed=s["seed"] + 1, progress=progress)


def run(args):
    from . import get_backend
    from .checkpoint import read_checkpoint, restore_checkpoint, save_checkpoint

    limiter = apply_runtime_options(args)
    if args.resume:
        meta, arrays = read_checkpoint(args.resume)
        settings = meta["settings"]
        if args.epochs:
            settings["epochs"] = args.epochs
    else:
        settings = settings_from_args(args)
    out = args.out or (os.path.dirname(os.path.abspath(args.resume)) if args.resume
                       else os.path.join("runs", settings["model"]))
    os.makedirs(out, exist_ok=True)
    trainer = build_trainer(settings, data_dir=args.data_dir, verbose=not args.quiet)
    if args.resume:
        restore_checkpoint(trainer, meta, arrays)
        print(f"resuming {args.resume} at epoch {trainer.current_epoch}/{settings['epochs']}")
    ckpt_path = os.path.join(out, "checkpoint.npz")
    if args.checkpoint or args.resume:
        trainer.on_epoch = lambda tr: save_checkpoint(ckpt_path, tr, settings)
    print(f"zerodl train: {settings['model']} {settings['dtype']} on backend {get_backend()}, "
          f"{settings['optimizer']} lr={settings['lr']}, {settings['epochs']} epochs, "
          f"batch {settings['batch_size']}, {trainer.train_size} training images", flush=True)
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    seconds = time.perf_counter() - start
    history = trainer.history()
    history.update(settings=settings, backend=get_backend(), seconds=seconds,
                   final_test_acc=getattr(trainer, "final_test_acc", None))
    with open(os.path.join(out, "history.json"), "w") as fh:
        json.dump(history, fh, indent=1)
    print(f"done in {seconds:.1f} s; final test accuracy "
          f"{history['final_test_acc']:.4f}; results in {out}")
    if not args.no_plot:
        try:
            from .plotting import learning_curves, save_figure
            fig = learning_curves(history, title=f"zerodl {settings['model']} on MNIST "
                                                 f"({settings['optimizer']}, {get_backend()})")
            print("learning curve:", save_figure(fig, os.path.join(out, "learning_curve.png")))
        except ImportError as exc:
            print(f"(no plot: {exc})")
    return 0
