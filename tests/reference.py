"""An independent NumPy float64 implementation of the family's objective for
a one-hidden-layer tanh network with a softmax cross-entropy loss, used to
pin the library's gradients. Nothing here imports keras_gradreg."""

import numpy as np


def forward(params, x):
    w1, b1, w2, b2 = params
    h = np.tanh(x @ w1 + b1)
    return h, h @ w2 + b2


def example_losses(params, x, y):
    _, z = forward(params, x)
    m = z.max(axis=1, keepdims=True)
    log_z = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return log_z - z[np.arange(len(y)), y]


def input_gradients(params, x, y):
    """Closed-form dL_i/dx_i."""
    w1, _, w2, _ = params
    h, z = forward(params, x)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return ((p @ w2.T) * (1.0 - h**2)) @ w1.T


def dual(p):
    if p == np.inf:
        return 1.0
    if p == 1.0:
        return np.inf
    return p / (p - 1.0)


def worst_case(g, p, sigma):
    """Argmax of g . r over ||r||_p <= sigma, per row (no ties assumed)."""
    if p == np.inf:
        return sigma * np.sign(g)
    if p == 1.0:
        r = np.zeros_like(g)
        idx = np.abs(g).argmax(axis=1)
        r[np.arange(len(g)), idx] = sigma * np.sign(g[np.arange(len(g)), idx])
        return r
    q = dual(p)
    nq = np.linalg.norm(g, ord=q, axis=1, keepdims=True)
    return sigma * np.sign(g) * np.abs(g) ** (q - 1) / nq ** (q - 1)


def objective(
    params, x, y, w, *, p, sigma, form, alpha, h=0.01, fixed=None, clip=None, mask=1.0
):
    """The batch objective (1/B) sum_i w_i [alpha L_i + (1-alpha) L_adv_i].

    `fixed` holds the perturbation computed at the point where the gradient
    is taken: the perturb and finite-difference forms treat it as constant.
    `mask` weighs the input coordinates (the ball ||r / mask||_p <= sigma).
    """
    clean = example_losses(params, x, y)
    if form == "penalty":
        g = input_gradients(params, x, y) * mask
        adv = clean + sigma * np.linalg.norm(g, ord=dual(p), axis=1)
    elif form == "perturb":
        x_adv = x + fixed
        if clip is not None:
            x_adv = np.clip(x_adv, *clip)
        adv = example_losses(params, x_adv, y)
    else:
        adv = clean + sigma / h * (example_losses(params, x + fixed, y) - clean)
    return np.mean(w * (alpha * clean + (1 - alpha) * adv))


def fixed_perturbation(params, x, y, *, p, sigma, form, h=0.01, mask=1.0):
    g = input_gradients(params, x, y) * mask
    return mask * worst_case(g, p, h if form == "finite_difference" else sigma)


def finite_difference_gradient(fn, params, step=1e-6):
    grads = []
    for i, value in enumerate(params):
        grad = np.zeros_like(value)
        for j in np.ndindex(value.shape):
            shifted = [v.copy() for v in params]
            shifted[i][j] = value[j] + step
            up = fn(shifted)
            shifted[i][j] = value[j] - step
            grad[j] = (up - fn(shifted)) / (2 * step)
        grads.append(grad)
    return grads


def maxout_forward(params, x, pieces):
    """Maxout hidden layer (contiguous groups of `pieces`) then a linear
    layer; returns the per-unit argmax and the logits."""
    w1, b1, w2, b2 = params
    z = (x @ w1 + b1).reshape(len(x), -1, pieces)
    winner = z.argmax(axis=2)
    h = z.max(axis=2)
    return winner, h @ w2 + b2


def maxout_losses(params, x, y, pieces):
    _, z = maxout_forward(params, x, pieces)
    m = z.max(axis=1, keepdims=True)
    return m[:, 0] + np.log(np.exp(z - m).sum(axis=1)) - z[np.arange(len(y)), y]


def maxout_input_gradients(params, x, y, pieces):
    """Closed-form dL_i/dx_i: the gradient flows through each unit's winning
    piece only."""
    w1, _, w2, _ = params
    winner, z = maxout_forward(params, x, pieces)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    dh = p @ w2.T  # (n, units)
    n, units = dh.shape
    dz = np.zeros((n, units, pieces))
    dz[np.arange(n)[:, None], np.arange(units)[None, :], winner] = dh
    return dz.reshape(n, -1) @ w1.T


def normalized_losses(params, x, y, kind, epsilon=1e-3):
    """Dense -> BatchNormalization (training mode: batch statistics) or
    LayerNormalization -> tanh -> Dense, softmax cross-entropy per example.
    `params` = (w1, b1, gamma, beta, w2, b2)."""
    w1, b1, gamma, beta, w2, b2 = params
    a = x @ w1 + b1
    axis = 0 if kind == "batch_norm" else 1
    mean = a.mean(axis=axis, keepdims=True)
    variance = ((a - mean) ** 2).mean(axis=axis, keepdims=True)
    h = np.tanh(gamma * (a - mean) / np.sqrt(variance + epsilon) + beta)
    z = h @ w2 + b2
    m = z.max(axis=1, keepdims=True)
    return m[:, 0] + np.log(np.exp(z - m).sum(axis=1)) - z[np.arange(len(y)), y]


def numeric_input_gradients(losses, x, step=1e-5):
    """d(sum_j L_j)/dx by central differences: with batch statistics each
    example's loss depends on every input, and the summed loss's gradient is
    what the family penalizes."""
    g = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += step
        down[index] -= step
        g[index] = (losses(up).sum() - losses(down).sum()) / (2 * step)
    return g


def project_l1(r, eps):
    """Euclidean projection of each row onto the l1 ball (sort-based)."""
    out = r.copy()
    for i, row in enumerate(r):
        if np.abs(row).sum() <= eps:
            continue
        u = np.sort(np.abs(row))[::-1]
        css = np.cumsum(u)
        k = np.nonzero(u - (css - eps) / np.arange(1, len(u) + 1) > 0)[0][-1]
        theta = (css[k] - eps) / (k + 1)
        out[i] = np.sign(row) * np.maximum(np.abs(row) - theta, 0.0)
    return out


def multistep_perturbation(
    params, x, y, *, p, sigma, steps, step_size, clip=None, coordinates=1,
    start=None, gradient=None,
):  # fmt: skip
    """`steps` steps of projected steepest ascent from r = 0 or `start`
    (no ties assumed): linf sign steps, l2 normalized steps, l1 steps
    spread over the `coordinates` largest movable |g|, a number p the
    Hölder direction with radial retraction onto the ball. `gradient(x)`
    replaces the loss's input gradient (the ascent of another function)."""
    gradient = gradient or (lambda moved: input_gradients(params, moved, y))
    r = np.zeros_like(x) if start is None else start.copy()
    if clip is not None:
        r = np.clip(x + r, *clip) - x
    for _ in range(steps):
        g = gradient(np.clip(x + r, *clip) if clip else x + r)
        if p == 1.0:
            if clip is not None:
                stuck = ((x + r <= clip[0]) & (g < 0)) | ((x + r >= clip[1]) & (g > 0))
                g = np.where(stuck, 0.0, g)
            top = np.argsort(-np.abs(g), axis=1)[:, :coordinates]
            d = np.zeros_like(g)
            rows = np.arange(len(g))[:, None]
            d[rows, top] = np.sign(g[rows, top]) / coordinates
            r = project_l1(r + step_size * d, sigma)
        else:
            r = r + step_size * worst_case(g, p, 1.0)
            if p == np.inf:
                r = np.clip(r, -sigma, sigma)
            else:
                length = np.linalg.norm(r, ord=p, axis=1, keepdims=True)
                r = r * np.minimum(1.0, sigma / np.maximum(length, 1e-12))
        if clip is not None:
            r = np.clip(x + r, *clip) - x
    return r


def single_step_perturbation(params, x, y, *, p, start, step, radius, clip):
    """One ascent step from `x + start` (start clipped into the range): the
    unit steepest-ascent direction of the gradient there times `step`,
    projected onto the `radius`-ball unless `radius` is None, and clipped
    into the range (FGSM-RS projects, N-FGSM does not)."""
    eta = np.clip(x + start, *clip) - x
    g = input_gradients(params, x + eta, y)
    r = eta + step * worst_case(g, p, 1.0)
    if radius is not None:
        if p == np.inf:
            r = np.clip(r, -radius, radius)
        else:
            length = np.linalg.norm(r, ord=p, axis=1, keepdims=True)
            r = r * np.minimum(1.0, radius / np.maximum(length, 1e-12))
    return np.clip(x + r, *clip) - x


def probabilities(params, x):
    _, z = forward(params, x)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def kl(p, q):
    """KL(p || q) per row."""
    return np.sum(p * (np.log(p) - np.log(q)), axis=1)


def kl_input_gradients(params, x, p_clean):
    """Closed-form d KL(p_clean || p(x)) / dx per row, p_clean constant:
    the logits' gradient is p(x) - p_clean."""
    w1, _, w2, _ = params
    h, _ = forward(params, x)
    return (((probabilities(params, x) - p_clean) @ w2.T) * (1.0 - h**2)) @ w1.T


def jacobians(params, x):
    """Closed-form d logits / dx per row: shape (batch, classes, inputs)."""
    w1, _, w2, _ = params
    h, _ = forward(params, x)
    return np.einsum("ik,jk,kc->icj", 1.0 - h**2, w1, w2)
