"""`keras-gradreg train`: one model, trained with Adam for a fixed number of
epochs (`--protocol adam`) or with the maxout papers' two stages on the
paper's network (`--protocol maxout`), then tested clean and under FGSM."""

from __future__ import annotations

import json
import math
import time

from keras_gradreg.src.files import settings_changes
from keras_gradreg.src.tools.cli._common import (
    json_default,
    load,
    output_folder,
    refuse_given,
    versions,
)

#: `--protocol maxout`: the `protocol.MAXOUT_PROTOCOLS` entry of each model.
#: CIFAR-10's is missing: its second model is trained afresh for 785 epochs
#: rather than continued (`reproductions/reproduce_cifar10.py`).
MAXOUT_PROTOCOL_OF = {"maxout_mlp": "mnist_pi", "mnist_conv_maxout": "mnist_conv"}
#: The arguments that change what `--protocol maxout` trains: a resume with
#: other values is refused.
RUN_SETTINGS = (
    "dataset", "model", "norm", "sigma", "form", "alpha", "fd_step", "steps",
    "step_size", "random_start", "epochs", "patience", "continue_epochs",
    "batch_size", "lr", "validation_size", "limit", "seed",
)  # fmt: skip


def _regularizer(args):
    from keras_gradreg import GradientRegularizer

    return GradientRegularizer(
        norm=args.norm,
        sigma=args.sigma,
        form=args.form,
        alpha=args.alpha,
        fd_step=args.fd_step,
        input_range=(0.0, 1.0),
        steps=args.steps,
        step_size=args.step_size,
        random_start=args.random_start,
    )


def _fill_defaults(args) -> None:
    """Sets the arguments whose default depends on `--protocol` or
    `--model`, and refuses those they have no use for."""
    if args.model != "cifar10_conv_maxout":
        refuse_given({"--width": args.width}, "--model cifar10_conv_maxout",
                     f"--model {args.model}")  # fmt: skip
    for form, flags in (
        ("finite_difference", {"--fd-step": args.fd_step}),
        ("multistep", {"--steps": args.steps, "--step-size": args.step_size,
                       "--no-random-start": args.random_start}),
    ):  # fmt: skip
        if args.form != form:
            refuse_given(flags, f"--form {form}", f"--form {args.form}")
    defaults = {"width": 1.0, "fd_step": 0.01, "steps": 7, "random_start": True}
    if args.protocol == "adam":
        refuse_given(
            {"--patience": args.patience, "--continue-epochs": args.continue_epochs},
            "--protocol maxout", "--protocol adam",
        )  # fmt: skip
        defaults |= {
            "epochs": 10, "batch_size": 128, "lr": 1e-3,
            "lr_schedule": "constant", "validation_size": 0,
        }  # fmt: skip
    else:
        from keras_gradreg.src.maxout.protocol import MAXOUT_PROTOCOLS

        if args.model not in MAXOUT_PROTOCOL_OF:
            raise ValueError(
                "--protocol maxout trains maxout_mlp or mnist_conv_maxout; "
                "CIFAR-10's protocol trains its second model afresh for 785 "
                "epochs, which the repository's reproductions/reproduce_cifar10.py "
                f"runs. Received: --model {args.model}"
            )
        refuse_given({"--lr-schedule": args.lr_schedule}, "--protocol adam",
                     "--protocol maxout")  # fmt: skip
        if args.validation_size == 0:
            raise ValueError(
                "--protocol maxout stops early on a validation split: "
                "--validation-size must be > 0. Received: --validation-size 0"
            )
        protocol = MAXOUT_PROTOCOLS[MAXOUT_PROTOCOL_OF[args.model]]
        defaults |= {
            "epochs": protocol.max_epochs,
            "patience": protocol.patience,
            "continue_epochs": protocol.continue_max_epochs,
            "batch_size": protocol.batch_size,
            "lr": protocol.learning_rate,
            "validation_size": 10000,
        }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _learning_rate(args, steps):
    import keras

    if args.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps)
    if args.lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            args.lr, decay_steps=max(1, steps // 10), decay_rate=0.8
        )
    return args.lr


def _fit_adam(args, model, jit, train_data, validation, output):
    """Adam for `--epochs`: (the model, its history, extra results)."""
    import keras

    x_train, y_train = train_data
    steps = args.epochs * math.ceil(len(x_train) / args.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(_learning_rate(args, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit,
    )
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=validation,
        verbose=args.verbose,
        callbacks=[keras.callbacks.CSVLogger(output / "history.csv")],
    ).history
    seconds = (time.perf_counter() - start) / args.epochs
    return model, history, {"seconds_per_epoch": seconds}


def _refuse_other_settings(args, directory) -> None:
    """Records the run's settings in `directory`, or refuses a resume of a
    run made with others."""
    settings = {name: getattr(args, name) for name in RUN_SETTINGS}
    changed = [
        f"--{name.replace('_', '-')}: {recorded!r} -> {requested!r}"
        for name, recorded, requested in settings_changes(
            directory / "settings.json", settings
        )
    ]
    if changed:
        raise ValueError(
            f"--output {args.output} holds a --protocol maxout run made with "
            f"other settings; resume with the same ones or choose another "
            f"--output. Received: {', '.join(changed)}"
        )


def _fit_maxout(args, model, jit, train_data, validation, output):
    """The maxout papers' two stages, resumable under `output/protocol`:
    (the final model, stage 1's history, extra results)."""
    import keras

    from keras_gradreg.src.maxout.protocol import MAXOUT_PROTOCOLS, train_then_continue
    from keras_gradreg.src.tools.plots import plot_protocol_runs, read_history
    from keras_gradreg.src.training.callbacks import EpochTimer

    directory = output / "protocol"
    _refuse_other_settings(args, directory)
    protocol = MAXOUT_PROTOCOLS[MAXOUT_PROTOCOL_OF[args.model]].replace(
        batch_size=args.batch_size, learning_rate=args.lr, max_epochs=args.epochs,
        patience=args.patience, continue_max_epochs=args.continue_epochs,
    )  # fmt: skip
    steps_per_epoch = math.ceil(len(train_data[0]) / protocol.batch_size)
    model.compile(
        protocol.optimizer(steps_per_epoch), "sparse_categorical_crossentropy",
        metrics=["accuracy"], jit_compile=jit,
    )  # fmt: skip
    timer = EpochTimer()
    summary = train_then_continue(
        model, train_data, validation, directory, protocol,
        callbacks=[timer], verbose=args.verbose,
    )  # fmt: skip
    stages = {
        stage: read_history(directory / stage / "history.csv")
        if (directory / stage / "history.csv").exists()
        else {}
        for stage in ("stage1", "stage2")
    }
    figure = plot_protocol_runs(
        {f"{args.model}, {args.norm} sigma={args.sigma:g}": {
            **stages, "target": summary["target"],
        }},
        output / "protocol.png",
    )  # fmt: skip
    last = stages["stage2"] or stages["stage1"]
    extra = {
        "protocol": summary,
        "seconds_per_epoch": timer.median if timer.times else None,
        "final_epoch": {k: v[-1] for k, v in last.items() if v},
        "figures": [figure.name],
    }
    model = keras.saving.load_model(summary["model_path"])
    return model, stages["stage1"], extra


def train(args) -> dict:
    import keras

    import keras_gradreg as kg
    from keras_gradreg.src.tools.plots import plot_learning_curves

    _fill_defaults(args)
    regularizer = _regularizer(args)  # bad values fail before any work
    output = output_folder(args.output)
    output.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    splits, dataset_label = load(args)
    (x_train, y_train), *rest = splits
    validation, (x_test, y_test) = (rest[0] if len(rest) == 2 else None), rest[-1]

    shape = {"input_shape": x_train.shape[1:], "regularizer": regularizer}
    if args.protocol == "maxout":
        model = kg.models.paper_network(MAXOUT_PROTOCOL_OF[args.model], **shape)
        fit = _fit_maxout
    else:
        model = {
            "maxout_mlp": kg.models.mnist_maxout_mlp,
            "mnist_conv_maxout": kg.models.mnist_conv_maxout,
            "cifar10_conv_maxout": lambda **a: kg.models.cifar10_conv_maxout(
                width=args.width, **a
            ),
        }[args.model](**shape)
        fit = _fit_adam
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    start = time.perf_counter()
    model, history, extra = fit(
        args, model, jit, (x_train, y_train), validation, output
    )
    wall = time.perf_counter() - start
    model.save(output / "model.keras")

    clean = kg.classification_accuracy(model, x_test, y_test)
    fgsm = kg.fgsm_accuracy(model, x_test, y_test, eps=args.fgsm_eps)
    figures = plot_learning_curves(
        history,
        output / "curves",
        title=f"{args.model}, {model.regularizer.norm} {args.form}",
    )
    results = {
        "dataset": dataset_label,
        "test_accuracy": clean,
        "test_error": 1.0 - clean,
        "fgsm_accuracy": fgsm,
        "fgsm_eps": args.fgsm_eps,
        "wall_time_s": wall,
        "final_epoch": {k: float(v[-1]) for k, v in history.items() if v},
        **extra,
        "settings": {k: v for k, v in vars(args).items() if k != "command"},
        "regularizer": model.regularizer.get_config(),
        "backend": keras.backend.backend(),
        "versions": versions(),
        "train_examples": int(len(x_train)),
        "test_examples": int(len(x_test)),
        "figures": [*extra.get("figures", []), *(p.name for p in figures)],
    }
    (output / "results.json").write_text(
        json.dumps(results, indent=2, default=json_default)
    )
    per_epoch = results["seconds_per_epoch"]
    timing = f", {per_epoch:.1f} s/epoch" if per_epoch else ""
    print(
        f"{dataset_label}: test error {1 - clean:.2%}, FGSM (eps={args.fgsm_eps}) "
        f"accuracy {fgsm:.2%}{timing} -> {output}"
    )
    return results
