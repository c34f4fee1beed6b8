"""FGM and PGD, checked against closed forms that do not trust the attacks.

On a linear model the loss is a function of the logits z = x W + b. With two
classes the cross-entropy is monotone in the margin z_other - z_true, which is
linear in x with direction d = w_other - w_true, so the optimal perturbation
in the eps-ball is known: eps * sign(d) for linf (also with box clipping, the
problem being separable), eps * d / ||d||_2 for l2 and eps * sign(d_k) e_k at
the largest |d_k| for l1.
"""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.family.geometry import project_l1

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _linear(seed=0, classes=3, features=5, softmax=False):
    model = keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(classes, activation="softmax" if softmax else None),
        ]
    )
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(features, classes)), rng.normal(size=classes)
    model.set_weights([w.astype("float32"), b.astype("float32")])
    return model, w, b


def _cross_entropy(w, b, x, y):
    z = x.astype("float64") @ w + b
    z = z - z.max(1, keepdims=True)
    return np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]


def _closed_form_gradient(w, b, x, y):
    z = x @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return p @ w.T


def _data(seed, n=40, features=5, classes=2, low=0.2, high=0.8):
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, (n, features)).astype("float32")
    return x, rng.integers(0, classes, n).astype("int32")


def _norms(delta):
    flat = delta.reshape(len(delta), -1).astype("float64")
    return {
        "linf": np.abs(flat).max(1),
        "l2": np.linalg.norm(flat, axis=1),
        "l1": np.abs(flat).sum(1),
    }


@pytest.mark.parametrize("norm", ["linf", "l2", "l1", 3.0])
def test_fgm_is_the_closed_form_worst_case(norm):
    model, w, b = _linear()
    x, y = _data(1, 20, classes=3, low=0.3, high=0.7)
    g = _closed_form_gradient(w, b, x, y)
    eps = 0.1
    expected = x + np.asarray(
        kg.worst_case_perturbation(g.astype("float32"), norm, eps)
    )
    got = kg.fgm(model, x, y, norm, eps, loss=LOSS, batch_size=7)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _optimum(w, x, y, norm, eps, input_range):
    d = (w[:, 1] - w[:, 0])[None, :] * np.where(y == 0, 1.0, -1.0)[:, None]
    if norm == "linf":
        r = eps * np.sign(d)
    elif norm == "l2":
        r = eps * d / np.linalg.norm(d, axis=1, keepdims=True)
    else:
        r = np.zeros_like(d)
        top = np.argmax(np.abs(d), axis=1)
        r[np.arange(len(d)), top] = eps * np.sign(d[np.arange(len(d)), top])
    out = x + r
    return out if input_range is None else np.clip(out, *input_range)


@pytest.mark.parametrize(
    "norm,eps,input_range",
    [
        ("linf", 0.15, (0.0, 1.0)),  # separable: clipping keeps it optimal
        ("linf", 0.15, None),
        ("l2", 0.4, None),
        ("l1", 0.6, None),
    ],
)
def test_fgm_and_pgd_reach_the_optimum_of_a_two_class_linear_model(
    norm, eps, input_range
):
    model, w, b = _linear(3, classes=2)
    x, y = _data(4)
    best = _cross_entropy(w, b, _optimum(w, x, y, norm, eps, input_range), y)
    x_fgm = kg.fgm(model, x, y, norm, eps, input_range=input_range)
    np.testing.assert_allclose(_cross_entropy(w, b, x_fgm, y), best, rtol=1e-4)
    # From x, PGD's steepest-ascent steps follow the optimal direction; with
    # a random start it converges to it (more slowly for l2).
    for random_start, rtol in ((False, 1e-4), (True, 5e-2)):
        x_pgd = kg.pgd(
            model, x, y, norm, eps, steps=30, random_start=random_start,
            input_range=input_range, seed=0,
        )  # fmt: skip
        achieved = _cross_entropy(w, b, x_pgd, y)
        assert np.all(achieved <= best + 1e-4)  # never beyond the optimum
        np.testing.assert_allclose(achieved, best, rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5), ("l1", 1.5)])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_the_ball_and_range_and_never_lowers_the_loss(
    norm, eps, random_start
):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(4),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (50, 6)).astype("float32")
    x[:5] = 0.0  # on the boundary of the range
    y = rng.integers(0, 4, 50)
    x_adv = kg.pgd(
        model, x, y, norm, eps, steps=7, random_start=random_start, restarts=2, seed=1
    )
    assert np.all(_norms(x_adv - x)[norm] <= eps * (1 + 1e-5) + 1e-6)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    per_example = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None
    )
    before = keras.ops.convert_to_numpy(per_example(y, model.predict(x, verbose=0)))
    after = keras.ops.convert_to_numpy(per_example(y, model.predict(x_adv, verbose=0)))
    assert np.all(after >= before - 1e-5)
    assert after.mean() > before.mean()


def test_pgd_is_deterministic_given_a_seed():
    model, _, _ = _linear(5)
    x, y = _data(6, classes=3)
    a = kg.pgd(model, x, y, "l2", 0.3, steps=3, seed=7)
    b = kg.pgd(model, x, y, "l2", 0.3, steps=3, seed=7)
    c = kg.pgd(model, x, y, "l2", 0.3, steps=3, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_targeted_pgd_moves_toward_the_target_and_margin_loss_works():
    model, w, b = _linear(7, classes=3)
    x, _ = _data(8, 60, classes=3)
    z = x @ w + b
    target = np.argsort(z, axis=1)[:, 1].astype("int32")  # the runner-up
    x_adv = kg.pgd(model, x, target, "linf", 0.3, steps=20, targeted=True, seed=0)
    z_adv = x_adv @ w + b
    assert np.mean(np.argmax(z_adv, axis=1) == target) > 0.5
    # Toward the target: its logit margin over the others never shrinks.
    rows = np.arange(60)

    def margin(z):
        others = z.copy()
        others[rows, target] = -np.inf
        return z[rows, target] - others.max(1)

    assert np.all(margin(z_adv) >= margin(z) - 1e-5)
    y = np.argmax(z, axis=1)
    x_cw = kg.pgd(model, x, y, "linf", 0.3, loss="margin", seed=0)
    assert np.mean(np.argmax(x_cw @ w + b, axis=1) == y) < 1.0


def test_softmax_heads_are_attacked_through_their_logits():
    # A saturated float32 softmax has zero gradient; the logits do not.
    logits_model, w, b = _linear(9, classes=3)
    softmax_model, _, _ = _linear(9, classes=3, softmax=True)
    x, y = _data(10, classes=3)
    scale = 200.0  # saturates the softmax
    for model in (logits_model, softmax_model):
        model.set_weights(
            [(w * scale).astype("float32"), (b * scale).astype("float32")]
        )
    g_logits = kg.input_gradients(logits_model, x, y)
    g_softmax = kg.input_gradients(softmax_model, x, y)
    np.testing.assert_allclose(g_softmax, g_logits, rtol=1e-4, atol=1e-6)
    # The margin loss of the logits never saturates: every example moves,
    # along w_runner_up - w_true.
    z = x.astype("float64") @ (w * scale) + b * scale
    y_top = np.argmax(z, axis=1)
    runner_up = np.argsort(z, axis=1)[:, -2]
    g_margin = kg.input_gradients(softmax_model, x, y_top, loss="margin")
    expected = (w[:, runner_up] - w[:, y_top]).T * scale
    np.testing.assert_allclose(g_margin, expected, rtol=1e-4, atol=1e-3)


def test_input_gradients_match_the_closed_form():
    model, w, b = _linear(11, classes=4, features=6)
    x, y = _data(12, 30, features=6, classes=4)
    expected = _closed_form_gradient(w, b, x.astype("float64"), y)
    np.testing.assert_allclose(
        kg.input_gradients(model, x, y, batch_size=8), expected, rtol=1e-4, atol=1e-6
    )


def test_attacks_never_update_model_state():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(3),
        ]
    )
    x, y = _data(13, classes=3)
    weights = [np.array(v) for v in model.get_weights()]
    kg.pgd(model, x, y, "linf", 0.1, steps=3, seed=0)
    kg.fgm(model, x, y, "l2", 0.5)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_l1_projection_is_the_closest_point_of_the_ball():
    rng = np.random.default_rng(14)
    v = rng.normal(size=(6, 9)).astype("float64")
    eps = 1.3
    w = keras.ops.convert_to_numpy(project_l1(keras.ops.convert_to_tensor(v), eps))
    assert np.all(np.abs(w).sum(1) <= eps + 1e-6)
    # No random point of the ball is closer to v.
    for _ in range(200):
        u = rng.laplace(size=v.shape)
        u *= eps * rng.uniform(size=(6, 1)) / np.abs(u).sum(1, keepdims=True)
        assert np.all(
            np.linalg.norm(v - w, axis=1) <= np.linalg.norm(v - u, axis=1) + 1e-9
        )
    inside = v * (0.5 * eps / np.abs(v).sum(1, keepdims=True))
    w_inside = keras.ops.convert_to_numpy(project_l1(inside, eps))
    np.testing.assert_allclose(w_inside, inside, rtol=1e-6)


def test_fgsm_accuracy_drops_with_eps():
    model, _, _ = _linear(4)
    x, _ = _data(5, 200, classes=3, low=0.0, high=1.0)
    y = np.argmax(model.predict(x, verbose=0), axis=1)  # 100% clean accuracy
    accuracies = [kg.fgsm_accuracy(model, x, y, eps) for eps in (0.0, 0.05, 0.3)]
    assert accuracies[0] == 1.0
    assert accuracies[0] >= accuracies[1] >= accuracies[2]
    assert accuracies[2] < 0.9


def _call(attack, **overrides):
    model, _, _ = _linear()
    args = {
        "x": np.full((4, 5), 0.5, "float32"),
        "y": np.zeros(4, "int32"),
        "norm": "linf",
        "eps": 0.1,
    }
    args.update(overrides)
    x, y, norm, eps = (args.pop(k) for k in ("x", "y", "norm", "eps"))
    return attack(model, x, y, norm, eps, **args)


@pytest.mark.parametrize("attack", [kg.fgm, kg.pgd])
@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"eps": -0.1}, "eps=-0.1"),
        ({"eps": float("nan")}, "eps=nan"),
        ({"norm": "l7"}, "norm='l7'"),
        ({"y": np.zeros(3, "int32")}, "len\\(y\\)=3"),
        ({"y": np.array([0, 1, 2, 3])}, "labels in \\[0, 3\\)"),
        ({"y": np.zeros((4, 3))}, "y.shape=\\(4, 3\\)"),
        ({"x": np.full((4, 5), 2.0, "float32")}, "input_range"),
        ({"loss": "hinge"}, "loss='hinge'"),
        ({"input_range": (1.0, 0.0)}, "low < high"),
    ],
)
def test_bad_attack_arguments(attack, overrides, message):
    with pytest.raises(ValueError, match=message):
        _call(attack, **overrides)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"steps": 0}, "steps=0"),
        ({"restarts": 0}, "restarts=0"),
        ({"step_size": -1.0}, "step_size=-1.0"),
        ({"norm": 3.0}, "norm=3.0"),
        ({"l1_sparsity": 1.0}, "l1_sparsity=1.0"),
    ],
)
def test_bad_pgd_arguments(overrides, message):
    with pytest.raises(ValueError, match=message):
        _call(kg.pgd, **overrides)


def test_attack_objects_and_names():
    assert kg.attacks.get("fgm").name == "FGM"
    assert kg.attacks.get("pgd").name == "PGD-20"
    assert kg.attacks.PGD(steps=40, restarts=3).name == "PGD-40x3"
    with pytest.raises(ValueError, match="Received: 'deepfool'"):
        kg.attacks.get("deepfool")
    with pytest.raises(ValueError, match="steps=0"):
        kg.attacks.PGD(steps=0)


@pytest.mark.parametrize("kind", ["sequential", "logits", "gradreg"])
def test_attacked_models_are_freed(kind):
    """The compiled attacks belong to their model: once the user drops the
    model, gc frees it (a tuner's trials must not accumulate)."""
    import gc
    import weakref

    def attacked():
        if kind == "sequential":
            model = keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]
            )
        else:
            inputs = keras.Input((4,))
            activation = "softmax" if kind == "gradreg" else None
            outputs = keras.layers.Dense(3, activation=activation)(inputs)
            model = (kg.GradRegModel if kind == "gradreg" else keras.Model)(
                inputs, outputs
            )
        x = np.random.default_rng(0).random((8, 4)).astype("float32")
        y = np.arange(8) % 3
        kg.fgm(model, x, y, "linf", 0.1)
        kg.pgd(model, x, y, "l2", 0.5, steps=2)
        kg.input_gradients(model, x, y)
        return weakref.ref(model)

    refs = [attacked() for _ in range(2)]
    gc.collect()
    assert [r() for r in refs] == [None, None]
