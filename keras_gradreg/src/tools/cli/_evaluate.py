"""`keras-gradreg evaluate`: attack a saved model, write a report."""

from __future__ import annotations

import json
import time
from pathlib import Path

from keras_gradreg.src.tools.cli._common import (
    json_default,
    load,
    output_folder,
    refuse_given,
    versions,
)
from keras_gradreg.src.tools.cli._parser import DEFAULT_EPS


def _fill_defaults(args) -> None:
    """Sets PGD's settings and the radii, refusing those that do nothing
    and a suite named beside other attacks."""
    suites = [a for a in args.attacks if a in ("standard", "standard-no-fab", "rand")]
    if suites and len(args.attacks) > 1:
        raise ValueError(
            f"--attacks {suites[0]} runs an AutoAttack version alone. Received: "
            f"--attacks {' '.join(args.attacks)}"
        )
    args.suite = suites[0] if suites else None
    if "fast" in args.attacks:  # FGM and PGD-20
        args.attacks = [a for a in args.attacks if a != "fast"]
        args.attacks += [a for a in ("fgm", "pgd") if a not in args.attacks]
    if "pgd" not in args.attacks:
        refuse_given(
            {"--steps": args.steps, "--restarts": args.restarts},
            "--attacks pgd", f"--attacks {' '.join(args.attacks)}",
        )  # fmt: skip
    if not args.noise_stds:
        refuse_given({"--noise-draws": args.noise_draws}, "--noise-stds",
                     "no --noise-stds")  # fmt: skip
    args.noise_stds = args.noise_stds or []
    args.noise_draws = 5 if args.noise_draws is None else args.noise_draws
    args.steps = 20 if args.steps is None else args.steps
    args.restarts = 1 if args.restarts is None else args.restarts
    for norm, radii in DEFAULT_EPS.items():
        name = f"{norm}_eps"
        if norm not in args.norms:
            refuse_given(
                {f"--{norm}-eps": getattr(args, name)}, f"--norms with {norm}",
                f"--norms {' '.join(args.norms)}",
            )  # fmt: skip
        elif getattr(args, name) is None:
            setattr(args, name, list(radii))


def evaluate(args) -> dict:
    import keras

    import keras_gradreg as kg
    from keras_gradreg.src.tools.plots import plot_input_gradients, plot_robust_accuracy

    _fill_defaults(args)
    path = Path(args.model_path)
    if not path.is_file():
        raise FileNotFoundError(f"--model-path: no such file: {path}")
    output = output_folder(args.output)
    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # zip, JSON and deserialization errors alike
        raise ValueError(
            f"--model-path: {path} is not a loadable Keras model ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Save models with "
            "`model.save('name.keras')`."
        ) from error
    args.validation_size = 0
    splits, dataset_label = load(args)
    x_test, y_test = splits[-1]
    output.mkdir(parents=True, exist_ok=True)
    if args.suite:
        attacks = args.suite
    else:
        attacks = [
            kg.attacks.PGD(steps=args.steps, restarts=args.restarts)
            if name == "pgd"
            else kg.attacks.get(name)
            for name in args.attacks
        ]
    eps = {norm: getattr(args, f"{norm}_eps") for norm in args.norms}
    start = time.perf_counter()
    # Square's windows need images: flat MNIST rows are 28 x 28 images.
    flat_images = {"mnist": (28, 28), "fashion_mnist": (28, 28)}
    image_shape = flat_images.get(args.dataset) if x_test.ndim == 2 else None
    report = kg.evaluate_robustness(
        model, x_test, y_test, args.norms, eps, attacks, seed=args.seed,
        image_shape=image_shape, noise_stds=args.noise_stds,
        noise_draws=args.noise_draws,
    )  # fmt: skip
    wall = time.perf_counter() - start
    label = path.parent.name or path.stem
    figures = [
        plot_robust_accuracy({label: report}, output / "robust_accuracy.png"),
        plot_input_gradients(
            {label: model},
            x_test[: args.examples],
            y_test[: args.examples],
            output / "gradients.png",
            norms=args.norms,
            eps={norm: values[0] for norm, values in eps.items() if values},
        ),
    ]
    lines = [
        f"# Robustness of `{path}`",
        "",
        f"{dataset_label} test set, {report.num_examples} images; backend "
        f"{keras.backend.backend()}; {wall:.0f} s. A point is robust only if it "
        "survives every attack (worst case).",
        "",
        report.to_markdown(),
        "",
        "![robust accuracy against eps](robust_accuracy.png)",
        "",
        "![input gradients and worst-case perturbations](gradients.png)",
    ]
    (output / "report.md").write_text("\n".join(lines) + "\n")
    cards = []
    if report.suite_name == "standard":  # a RobustBench model card per threat
        for norm, eps in report.threats():
            cards.append(output / f"model_card-{norm}-{eps:g}.json")
            kg.write_model_card(
                report, cards[-1], norm, eps, name=label, dataset=args.dataset
            )
    results = {
        "model": str(path),
        "dataset": dataset_label,
        "backend": keras.backend.backend(),
        "wall_time_s": wall,
        "settings": {k: v for k, v in vars(args).items() if k != "command"},
        "report": report.to_dict(),
        "figures": [p.name for p in figures],
        "model_cards": [p.name for p in cards],
        "versions": versions(),
    }
    (output / "robustness.json").write_text(
        json.dumps(results, indent=2, default=json_default)
    )
    print(report.to_markdown())
    print(f"-> {output / 'report.md'}")
    return results
