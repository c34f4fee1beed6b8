"""The label-free member's pieces against closed forms."""

import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.family import virtual


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_kl_divergence_matches_numpy():
    rng = np.random.default_rng(0)
    p, q = _softmax(rng.normal(size=(5, 4))), _softmax(rng.normal(size=(5, 4)))
    expected = (p * (np.log(p) - np.log(q))).sum(-1)
    got = np.asarray(virtual.kl_divergence(p.astype("float32"), q.astype("float32")))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.all(np.asarray(virtual.kl_divergence(p, p)) == 0.0)


def test_power_iteration_finds_the_dominant_eigenvector_of_the_hessian():
    """For logits z = x W the Hessian of KL(p || softmax((x + r) W)) at
    r = 0 is W (diag p - p p^T) W^T: power iteration through the exact
    gradient at xi d converges to its dominant eigenvector."""
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(6, 4))
    x = rng.normal(size=(3, 6))
    p = _softmax(x @ kernel)

    def divergence_gradient(deltas):
        (r,) = [np.asarray(d, "float64") for d in deltas]
        q = _softmax((x + r) @ kernel)
        return [((q - p) @ kernel.T).astype("float32")]

    start = [rng.normal(size=x.shape).astype("float32")]
    (d,) = virtual.power_iteration(divergence_gradient, start, xi=1e-3, iterations=60)
    d = np.asarray(d)
    for i in range(len(x)):
        hessian = kernel @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ kernel.T
        values, vectors = np.linalg.eigh(hessian)
        assert values[-1] > 1.1 * values[-2]  # a separated top eigenvalue
        top = vectors[:, -1]
        np.testing.assert_allclose(abs(d[i] @ top), 1.0, atol=1e-3)
    one_step = np.asarray(
        virtual.power_iteration(divergence_gradient, start, xi=1e-3, iterations=1)[0]
    )
    assert np.all(np.abs(np.linalg.norm(one_step, axis=1) - 1.0) < 1e-5)


def _relu_mlp(rng, widths):
    """He-initialized ReLU MLP weights, the last layer scaled up so the
    outputs are confident like a trained network's."""
    kernels = [
        rng.normal(0.0, np.sqrt(2.0 / a), (a, b)) for a, b in zip(widths, widths[1:])
    ]
    kernels[-1] *= 8.0
    return kernels


def _exact_hessian_products(kernels, x, d):
    """`H d` per example in float64 for a bias-free ReLU MLP with a softmax
    output, where H is the Hessian of `KL(p(x) || p(x + r))` at r = 0:
    `H = J^T (diag p - p p^T) J`, J the Jacobian of the logits (the model's
    own curvature drops out because the KL's gradient at r = 0 is zero)."""
    h, tangent, masks = x, d, []
    for kernel in kernels[:-1]:
        pre, tangent = h @ kernel, tangent @ kernel
        masks.append(pre > 0)
        h, tangent = np.maximum(pre, 0.0), tangent * masks[-1]
    p, tangent = _softmax(h @ kernels[-1]), tangent @ kernels[-1]
    back = p * tangent - p * (p * tangent).sum(-1, keepdims=True)
    back = back @ kernels[-1].T
    for kernel, mask in zip(kernels[-2::-1], masks[::-1]):
        back = (back * mask) @ kernel.T
    return back


def _float32_directions(kernels, x, start, xi):
    """One power-iteration step of `virtual.power_iteration` in float32,
    its input gradient taken by the backend's autodiff."""
    import keras

    from keras_gradreg.src.training import backend

    layers = [
        keras.layers.Dense(k.shape[1], use_bias=False, activation="relu")
        for k in kernels[:-1]
    ] + [keras.layers.Dense(kernels[-1].shape[1], use_bias=False)]
    model = keras.Sequential([keras.Input((x.shape[1],)), *layers])
    model.set_weights([k.astype("float32") for k in kernels])
    x32 = keras.ops.convert_to_tensor(x.astype("float32"))
    target = keras.ops.softmax(model(x32))

    def divergence_gradient(deltas):
        def divergence(z):
            moved = keras.ops.softmax(model(z))
            return virtual.kl_divergence(target, moved), None

        return [backend.values_and_input_gradient(divergence, x32 + deltas[0])[2]]

    start = [start.astype("float32")]
    (d,) = virtual.power_iteration(divergence_gradient, start, xi, iterations=1)
    return keras.ops.convert_to_numpy(d).astype("float64")


def test_the_default_xi_gives_the_float32_direction_of_a_deep_relu_mlp():
    """The finite difference `dD/dr (xi d)` must resolve `xi H d` above
    float32 round-off: `x + xi d` rounds away a step below about 6e-8 |x|
    per coordinate. At the default xi, the float32 one-step direction of a
    784-512-512-512-10 ReLU MLP on inputs in [0, 1] points along the exact
    float64 `H d_0`; at Miyato et al.'s xi = 1e-6 it does not (which is
    why the default is not theirs)."""
    import keras_gradreg as kg

    rng = np.random.default_rng(7)
    kernels = _relu_mlp(rng, (784, 512, 512, 512, 10))
    x = rng.random((32, 784))
    start = rng.normal(size=x.shape)
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    exact = _exact_hessian_products(kernels, x, start)
    exact /= np.linalg.norm(exact, axis=1, keepdims=True)

    def cosines(xi):
        return (_float32_directions(kernels, x, start, xi) * exact).sum(-1)

    assert np.median(cosines(kg.forms.Virtual().xi)) > 0.99
    assert np.median(cosines(1e-6)) < 0.9


@pytest.mark.parametrize("mask", [None, [1.0, 0.0, 0.5, 1.0, 2.0, 1.0]])
def test_the_label_free_member_trains_on_the_divergence_at_the_eigenvector(mask):
    """A linear softmax model with learning rate 0 and no labels (sample
    weight 0): the logged adv_loss is the KL at sigma times the Hessian's
    dominant eigenvector (either sign: power iteration keeps the random
    start's), and beats a random direction of the same length. With a
    feature mask w the ball is ||r / w||_2 <= sigma: r = sigma w v, v the
    dominant eigenvector of diag(w) H diag(w), so r is 0 where w is."""
    import keras

    import keras_gradreg as kg

    rng = np.random.default_rng(3)
    kernel, bias = rng.normal(size=(6, 4)), rng.normal(size=4)
    x = rng.normal(size=(8, 6)).astype("float32")
    w = np.ones(6) if mask is None else np.asarray(mask)
    inputs = keras.Input((6,))
    model = kg.GradRegModel(
        inputs, keras.layers.Dense(4)(inputs), norm="l2", sigma=0.3, form="perturb",
        virtual=True, power_iterations=50, xi=1e-3, feature_mask=mask,
    )  # fmt: skip
    model.set_weights([kernel.astype("float32"), bias.astype("float32")])
    model.compile(
        keras.optimizers.SGD(0.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    logs = model.fit(
        x, np.zeros(8, "int32"), sample_weight=np.zeros(8, "float32"),
        batch_size=8, verbose=0,
    ).history  # fmt: skip
    assert logs["clean_loss"][0] == 0.0
    p = _softmax(x @ kernel + bias)

    def kl(r):
        q = _softmax((x + r) @ kernel + bias)
        return (p * (np.log(p) - np.log(q))).sum(-1)

    tops = []
    for i in range(len(x)):
        hessian = kernel @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ kernel.T
        tops.append(w * np.linalg.eigh(np.outer(w, w) * hessian)[1][:, -1])
    tops = 0.3 * np.array(tops)
    low, high = np.minimum(kl(tops), kl(-tops)), np.maximum(kl(tops), kl(-tops))
    assert low.mean() * (1 - 1e-3) <= logs["adv_loss"][0] <= high.mean() * (1 + 1e-3)
    random = rng.normal(size=x.shape) * w
    random *= 0.3 / np.linalg.norm(
        random / np.where(w > 0, w, 1), axis=1, keepdims=True
    )
    assert logs["adv_loss"][0] > 1.5 * kl(random).mean()


def _one_linear_step(kernel, bias, x, y, sample_weight=None, **regularizer):
    """The weight gradient of one SGD(1.0) step of a linear softmax
    GradRegModel (the label-free member, l2 sigma 0.5, 50 power-iteration
    steps), as `old - new` weights flattened."""
    import keras

    import keras_gradreg as kg

    inputs = keras.Input((kernel.shape[0],))
    model = kg.GradRegModel(
        inputs, keras.layers.Dense(kernel.shape[1])(inputs), norm="l2", sigma=0.5,
        form="perturb", virtual=True, power_iterations=50, xi=1e-3, **regularizer,
    )  # fmt: skip
    model.set_weights([kernel.astype("float32"), bias.astype("float32")])
    model.compile(
        keras.optimizers.SGD(1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        x.astype("float32"), y.astype("int32"), sample_weight=sample_weight,
        batch_size=len(x), shuffle=False, verbose=0,
    )  # fmt: skip
    return np.concatenate(
        [(a - b).ravel() for a, b in zip((kernel, bias), model.get_weights())]
    )


def _divergence_step_gradients(kernel, bias, x):
    """Float64 central differences of `KL_i(p_i || q(x_i + r_i))` over the
    weights, per example (rows), at r = +/- 0.5 times each example's
    dominant Hessian eigenvector: `(plus, minus)`."""
    p = _softmax(x @ kernel + bias)
    tops = []
    for p_i in p:
        hessian = kernel @ (np.diag(p_i) - np.outer(p_i, p_i)) @ kernel.T
        tops.append(0.5 * np.linalg.eigh(hessian)[1][:, -1])

    def gradients(r):
        def kl(params):
            k, b = params[: kernel.size].reshape(kernel.shape), params[kernel.size :]
            q = _softmax((x + r) @ k + b)
            return (p * (np.log(p) - np.log(q))).sum(-1)

        params, h = np.concatenate([kernel.ravel(), bias]), 1e-6
        steps = np.eye(len(params)) * h
        return np.stack([(kl(params + e) - kl(params - e)) / (2 * h) for e in steps], 1)

    return gradients(np.array(tops)), gradients(-np.array(tops))


def _best_sign_error(got, plus, minus, offset=0.0):
    """Power iteration keeps each example's random sign of the eigenvector:
    the smallest max-error of `got` against `offset` plus the mean
    divergence gradient over the 2^n sign patterns."""
    import itertools

    return min(
        np.max(
            np.abs(
                got - offset - np.where(np.array(signs)[:, None], plus, minus).mean(0)
            )
        )
        for signs in itertools.product((True, False), repeat=len(plus))
    )


def test_the_label_free_member_weight_gradient_holds_p_and_r_constant():
    """The weight gradient of `mean_i KL(p_i || q(x_i + r_i))` on a linear
    softmax model, p(x) and r* held constant, against central finite
    differences in float64 (unlabeled rows: sample weight 0). The best of
    the 2^8 eigenvector sign patterns must match; a gradient leaking through
    p(x) (it would add the gradient of p's negative entropy) matches none."""
    rng = np.random.default_rng(5)
    kernel, bias = rng.normal(size=(6, 4)), rng.normal(size=4)
    x = rng.normal(size=(8, 6))
    got = _one_linear_step(
        kernel, bias, x, np.zeros(8), sample_weight=np.zeros(8, "float32")
    )
    plus, minus = _divergence_step_gradients(kernel, bias, x)
    scale = np.max(np.abs(plus.mean(0)))
    assert _best_sign_error(got, plus, minus) < 2e-3 * scale


def test_separate_passes_train_on_labeled_loss_plus_unlabeled_divergence():
    """With `labeled_rows=3`, the weight gradient of a linear softmax model
    is the labeled rows' mean cross-entropy (closed form) plus the unlabeled
    rows' mean KL at the Hessian's eigenvector (float64 central
    differences, best of the 2^5 eigenvector signs)."""
    rng = np.random.default_rng(8)
    kernel, bias = rng.normal(size=(6, 4)), rng.normal(size=4)
    x = rng.normal(size=(8, 6))
    y = np.array([2, 0, 3, 0, 0, 0, 0, 0])  # rows 3..7: placeholders
    got = _one_linear_step(kernel, bias, x, y, labeled_rows=3)
    residual = _softmax(x[:3] @ kernel + bias) - np.eye(4)[y[:3]]
    cross_entropy = np.concatenate([(x[:3].T @ residual).ravel(), residual.sum(0)]) / 3
    plus, minus = _divergence_step_gradients(kernel, bias, x[3:])
    scale = np.max(np.abs(cross_entropy))
    assert _best_sign_error(got, plus, minus, cross_entropy) < 2e-3 * scale
    # Without the divergence the step would be the cross-entropy alone.
    assert np.max(np.abs(got - cross_entropy)) > 1e-2 * scale


def test_the_label_free_member_refuses_what_it_cannot_train():
    import keras_gradreg as kg

    for form in ("penalty", "finite_difference", "multistep"):
        with pytest.raises(ValueError, match="form='perturb'.*Received: form="):
            kg.GradientRegularizer(form=form, virtual=True)
    for name, value in (("xi", 0.0), ("power_iterations", 0), ("virtual_weight", -1.0)):
        with pytest.raises(ValueError, match=f"Received: {name}="):
            kg.GradientRegularizer(form="perturb", virtual=True, **{name: value})
    with pytest.raises(ValueError, match="Received: virtual="):
        kg.GradientRegularizer(virtual=1)


def _two_moons(rng, n):
    t, labels = rng.uniform(0.0, np.pi, n), rng.integers(0, 2, n)
    upper = np.stack([np.cos(t), np.sin(t)], 1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], 1)
    x = np.where(labels[:, None] == 0, upper, lower) + rng.normal(0, 0.08, (n, 2))
    return x.astype("float32"), labels


@pytest.mark.slow
def test_the_label_free_member_propagates_six_labels_along_two_moons():
    """Semi-supervised training end to end (Miyato et al.'s synthetic
    case): three labels per moon and 2,000 unlabeled points. Supervised
    training alone leaves a boundary that cuts the moons; the divergence on
    the unlabeled points carries the labels along them."""
    import keras

    import keras_gradreg as kg
    from keras_gradreg.src.training.semi_supervised import SemiSupervisedBatches

    rng = np.random.default_rng(0)
    x, y = _two_moons(rng, 2000)
    x_test, y_test = _two_moons(rng, 2000)
    labeled = np.r_[np.flatnonzero(y == 0)[:3], np.flatnonzero(y == 1)[:3]]
    errors = {}
    for name, regularizer in (
        ("supervised", {"sigma": 0.0}),
        ("label-free", {"sigma": 0.3, "virtual": True, "norm": "l2"}),
    ):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((2,))
        h = keras.layers.Dense(64, activation="relu")(inputs)
        h = keras.layers.Dense(64, activation="relu")(h)
        outputs = keras.layers.Dense(2, activation="softmax")(h)
        model = kg.GradRegModel(inputs, outputs, form="perturb", **regularizer)
        model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
        batches = SemiSupervisedBatches(
            x[labeled], y[labeled], x, labeled_batch_size=6,
            unlabeled_batch_size=64, steps_per_epoch=150, seed=0,
        )  # fmt: skip
        model.fit(batches, epochs=2, verbose=0)
        errors[name] = 1.0 - kg.classification_accuracy(model, x_test, y_test)
    assert errors["supervised"] > 0.08, errors
    assert errors["label-free"] < 0.02, errors


def test_the_label_free_member_refuses_alpha():
    with pytest.raises(ValueError, match="Received: alpha=0.3"):
        kg.GradientRegularizer(form="virtual", alpha=0.3)
