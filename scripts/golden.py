#!/usr/bin/env python3
"""Golden fixtures for tests/golden_jax.rs, computed by JAX in float64, independently of the engine.

Regenerate (from the repository root; the output is byte-for-byte reproducible with these pins):
    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install jax==0.10.2 jaxlib==0.10.2 numpy==2.4.6
    /tmp/jaxenv/bin/python scripts/golden.py
It rewrites tests/fixtures/golden_<case>.json for every case in CASES (CPU only, ~30 s).

Each case is a small two-tower network written out here layer by layer from the paper's
definitions (jax.lax convolutions and reduce_window, jax.grad for the gradients), not by reading
the engine's code. Only the things that are conventions rather than mathematics are shared with
the engine: the tensor layouts (NCHW, weights [out, in, k, k] and [out, in]), the order in which a
layer reading both towers sees them (tower 0's channels first), the naming and indexing of
dropout's Philox stream, and the JSON fixture format below.

Inputs (images and weights) are drawn in float64 and then rounded to float32, so the reference is
exactly the function of the numbers the float32 engine receives; they are written as the shortest
decimal that reads back (f64 parse, then f32 cast, as serde does) to that float32. Outputs are
float64 at full precision.

Each fixture holds two training steps (`step` and `step + 1`, so two different dropout masks): the
gradients of the first, the weights after each update, and the loss of the second. With zero
initial momentum the first update alone cannot show the momentum term; the second does. It also
holds the test-time logits (dropout replaced by its (1 - p) scaling) at the initial weights.

Max pooling: jax.grad routes a tied window's gradient by XLA's select rule, which need not be the
engine's first-maximum rule. Rather than re-implement the backward rule, the script asserts (with
`check_kinks`, at every forward pass it records) that in every pooling window the largest value
beats the runner-up by a relative margin far above float32 rounding, so both implementations pick
the same element and the tie rule never enters. The one tie allowed is a window of ReLU outputs
that are all exactly zero: its gradient dies in the ReLU below whichever element gets it. Likewise
no ReLU input lies near zero, so both sides agree on which units are active.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

jax.config.update("jax_enable_x64", True)

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

# ---------------------------------------------------------------- Philox-4x32-10 (numpy, uint64 math)
M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox(ctr, key):
    c = list(ctr)
    k = list(key)
    for r in range(10):
        if r:
            k = [(k[0] + W0) & MASK, (k[1] + W1) & MASK]
        p0, p1 = M0 * c[0], M1 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & MASK, p1 & MASK, ((p0 >> 32) ^ c[3] ^ k[1]) & MASK, p0 & MASK]
    return c


# Known answers from Random123's kat_vectors (philox4x32_10).
assert philox([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8], "Philox KAT"
assert philox([MASK] * 4, [MASK] * 2) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD], "Philox KAT"
assert philox([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]) == [
    0xD16CFE09,
    0x94FDCCEB,
    0x5001E420,
    0x24126EA1,
], "Philox KAT"


def philox_word(seed, stream, index):
    block = index // 4
    ctr = [block & MASK, block >> 32, stream & MASK, stream >> 32]
    return philox(ctr, [seed & MASK, seed >> 32])[index % 4]


def dropout_mask(seed, stream, n, units_total, p):
    """keep[s, u] for the whole layer: uniform from the word's top 24 bits, kept when >= p."""
    keep = np.zeros((n, units_total))
    for s in range(n):
        for u in range(units_total):
            bits = philox_word(seed, stream, s * units_total + u)
            keep[s, u] = 1.0 if (bits >> 8) / 16777216.0 >= p else 0.0
    assert 0.0 < keep.mean() < 1.0, "a dropout mask that keeps all or nothing tests nothing"
    return keep


def dropout_stream(step, layer_index):
    return (2 << 56) | (step << 16) | layer_index


# ---------------------------------------------------------------- layers (NCHW, float64)
def conv(x, w, b, stride, pad, pad_end):
    y = lax.conv_general_dilated(
        x, w, (stride, stride), [(pad, pad_end), (pad, pad_end)], dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    return y + b[None, :, None, None]


def lrn(x, size, k, alpha, beta, alpha_over_n):
    """Across channels of one tower: window [c - size//2, c + size//2], clipped."""
    half = size // 2
    a = alpha / size if alpha_over_n else alpha
    sq = jnp.pad(x * x, ((0, 0), (half, half), (0, 0), (0, 0)))
    c = x.shape[1]
    window = sum(sq[:, j : j + c] for j in range(size))
    return x * (k + a * window) ** (-beta)


def spatial_norm(x, size, k, alpha, beta, alpha_over_area):
    half = size // 2
    a = alpha / (size * size) if alpha_over_area else alpha
    window = lax.reduce_window(x * x, 0.0, lax.add, (1, 1, size, size), (1, 1, 1, 1), [(0, 0), (0, 0), (half, half), (half, half)])
    return x * (k + a * window) ** (-beta)


def max_pool(x, size, stride):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, size, size), (1, 1, stride, stride), "VALID")


# Where the function has kinks, the float32 engine and this float64 reference must sit on the same
# side of them, or their gradients differ by more than rounding. The engine's activations differ
# from these by a few 1e-7 relative (observed: logits 2e-6 at most), so the margins below, 100x and
# more above that, put every kink out of reach:
# - a ReLU input must not lie within RELU_MARGIN * (the layer's largest |input|) of zero;
# - the largest value of a pooling window must beat the runner-up by POOL_MARGIN of its magnitude.
#   One tie is harmless and allowed: a window of ReLU outputs that are all exactly zero. Its
#   gradient, wherever it is routed, meets a ReLU with a negative input and dies there.
RELU_MARGIN = 1e-4
POOL_MARGIN = 1e-4


def assert_relu_clear_of_zero(x, where):
    x = np.abs(np.asarray(x))
    assert x.min() > RELU_MARGIN * x.max(), f"a ReLU input within {x.min():.2e} of zero at {where}"


def assert_no_pool_ties(x, size, stride, after_relu, where):
    x = np.asarray(x)
    n, c, h, w = x.shape
    for i in range((h - size) // stride + 1):
        for j in range((w - size) // stride + 1):
            win = x[:, :, i * stride : i * stride + size, j * stride : j * stride + size].reshape(n, c, -1)
            top2 = np.sort(win, axis=2)[:, :, -2:]
            top, gap = np.abs(top2[:, :, 1]), top2[:, :, 1] - top2[:, :, 0]
            clear = gap > POOL_MARGIN * top
            if after_relu:
                clear |= top == 0.0
            assert clear.all(), f"near-tied maximum in a pooling window at {where}: gaps {gap[~clear]}"


# ---------------------------------------------------------------- the networks
def forward(case, params, images, train, check_kinks=False):
    """Runs the case's layer list over two towers; returns the logits [n, classes]."""
    spec = case["spec"]
    towers = spec["towers"]
    xs = [images] * towers  # the image is whole on every tower
    n = images.shape[0]
    for li, layer in enumerate(spec["layers"]):
        kind = layer["type"]
        if kind in ("conv", "fc"):
            reads_all = layer.get("input", "own") == "all"
            first_only = layer.get("placement", "split") == "first"
            active = 1 if first_only else towers
            if reads_all:
                # Every tower's output side by side: tower 0's channels (or units) first.
                inputs = [jnp.concatenate(xs, axis=1)] * active
            else:
                inputs = xs[:active]
            outs = []
            for t in range(active):
                w, b = params[li][t]
                x = inputs[t]
                if kind == "conv":
                    pad = layer.get("pad", 0)
                    outs.append(conv(x, w, b, layer.get("stride", 1), pad, layer.get("pad_end", pad)))
                else:
                    outs.append(x.reshape(n, -1) @ w.T + b)
            xs = outs
        elif kind == "relu":
            if check_kinks:
                for t, x in enumerate(xs):
                    assert_relu_clear_of_zero(x, f"{layer['name']} tower {t}")
            xs = [jnp.maximum(x, 0.0) for x in xs]
        elif kind == "tanh":
            xs = [jnp.tanh(x) for x in xs]
        elif kind == "lrn":
            xs = [lrn(x, layer["size"], layer["k"], layer["alpha"], layer["beta"], layer.get("alpha_over_n", False)) for x in xs]
        elif kind == "spatial_norm":
            xs = [spatial_norm(x, layer["size"], layer["k"], layer["alpha"], layer["beta"], layer.get("alpha_over_area", False)) for x in xs]
        elif kind == "max_pool":
            if check_kinks:
                after_relu = li > 0 and spec["layers"][li - 1]["type"] == "relu"
                for t, x in enumerate(xs):
                    assert_no_pool_ties(x, layer["size"], layer["stride"], after_relu, f"{layer['name']} tower {t}")
            xs = [max_pool(x, layer["size"], layer["stride"]) for x in xs]
        elif kind == "dropout":
            p = layer["p"]
            if train:
                units = xs[0].reshape(n, -1).shape[1]
                keep = dropout_mask(case["seed"], dropout_stream(case["step"], li), n, units * len(xs), p)
                # The mask in the activations' dtype, so a float32 run (float32_spread) stays float32.
                masks = [jnp.asarray(keep[:, t * units : (t + 1) * units].reshape(x.shape), x.dtype) for t, x in enumerate(xs)]
                xs = [x * m for x, m in zip(xs, masks)]
            else:
                xs = [x * (1.0 - p) for x in xs]
        else:
            raise ValueError(kind)
    return jnp.concatenate([x.reshape(n, -1) for x in xs], axis=1)


def loss_fn(params, case, images, labels):
    logits = forward(case, params, images, train=True)
    logp = jax.nn.log_softmax(logits, axis=1)
    return -jnp.mean(logp[jnp.arange(labels.shape[0]), labels])


def make_params(spec, rng):
    """Weights N(0, std^2) per layer, biases the layer's constant, per tower in engine layouts."""
    params = []
    towers = spec["towers"]
    shape_c, size = spec["input"]["channels"], spec["input"]["size"]
    shape = (shape_c, size, size)  # per tower, per sample
    prev_active = towers
    for layer in spec["layers"]:
        kind = layer["type"]
        init = layer.get("init", {})
        std, bias = init.get("weight_std", 0.01), init.get("bias", 0.0)
        entry = []
        c, h, w = shape
        if kind in ("conv", "fc"):
            active = 1 if layer.get("placement", "split") == "first" else towers
            reads_all = layer.get("input", "own") == "all" and len(params) > 0
            cin = c * prev_active if reads_all else c
            if kind == "conv":
                out = layer["filters"] // active
                k, s, pad = layer["kernel"], layer.get("stride", 1), layer.get("pad", 0)
                pad_end = layer.get("pad_end", pad)
                for _ in range(active):
                    entry.append((rng.normal(0, std, (out, cin, k, k)), np.full(out, bias)))
                shape = (out, (h + pad + pad_end - k) // s + 1, (w + pad + pad_end - k) // s + 1)
            else:
                out = layer["units"] // active
                for _ in range(active):
                    entry.append((rng.normal(0, std, (out, cin * h * w)), np.full(out, bias)))
                shape = (out, 1, 1)
            prev_active = active
        elif kind == "max_pool":
            z, s = layer["size"], layer["stride"]
            shape = (c, (h - z) // s + 1, (w - z) // s + 1)
        params.append(entry)
    return params


def sgd_step(spec, params, velocity, grads, lr):
    """The paper's update, v = mu*v - wd*eps*w - eps*g; w = w + v, with eps the base rate times the
    layer's lr_mult (and the spec's bias_lr_mult for biases; bias decay per the spec's switch).
    Returns (weights, velocity) after the step."""
    optim = spec["optim"]
    mu, wd = optim["momentum"], optim["weight_decay"]
    new_params, new_velocity = [], []
    for layer, lp, lv, lg in zip(spec["layers"], params, velocity, grads):
        mult = layer.get("init", {}).get("lr_mult", 1.0)
        eps_w = lr * mult
        eps_b = lr * mult * optim["bias_lr_mult"]
        wd_b = wd if optim["bias_decay"] else 0.0
        pe, ve = [], []
        for (w, b), (vw, vb), (gw, gb) in zip(lp, lv, lg):
            vw = mu * vw - wd * eps_w * w - eps_w * np.asarray(gw)
            vb = mu * vb - wd_b * eps_b * b - eps_b * np.asarray(gb)
            pe.append((w + vw, b + vb))
            ve.append((vw, vb))
        new_params.append(pe)
        new_velocity.append(ve)
    return new_params, new_velocity


def to_f32(a):
    """The float32 value nearest to each element, held in float64."""
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


def f32_list(a):
    """Float32-exact values as the shortest decimals that read back to the same float32 through an
    f64 parse and an f32 cast (what the Rust test does)."""
    out = []
    for x in np.asarray(a).ravel():
        d = float(str(np.float32(x)))
        assert np.float32(d) == np.float32(x) and float(np.float32(x)) == x, "not float32-exact"
        out.append(d)
    return out


def flat(tree, encode=lambda a: np.asarray(a).ravel().tolist()):
    return [[{"weight": encode(w), "bias": encode(b)} for (w, b) in layer] for layer in tree]


CASES = {
    "paper_tiny": {
        "seed": 11,
        "step": 3,
        "lr": 0.05,
        "batch": 3,
        "spec": {
            "name": "paper-tiny",
            "input": {"channels": 3, "size": 15},
            "towers": 2,
            "layers": [
                {"type": "conv", "name": "conv1", "filters": 8, "kernel": 3, "stride": 2, "init": {"weight_std": 0.2, "bias": 1.0}},
                {"type": "relu", "name": "relu1"},
                {"type": "lrn", "name": "lrn1", "size": 5, "k": 2.0, "alpha": 0.1, "beta": 0.75},
                {"type": "max_pool", "name": "pool1", "size": 3, "stride": 2},
                {"type": "conv", "name": "conv2", "filters": 12, "kernel": 3, "pad": 1, "init": {"weight_std": 0.1, "bias": 1.0}},
                {"type": "relu", "name": "relu2"},
                {"type": "conv", "name": "conv3", "filters": 8, "kernel": 3, "pad": 1, "input": "all", "init": {"weight_std": 0.05, "bias": 1.0}},
                {"type": "relu", "name": "relu3"},
                {"type": "max_pool", "name": "pool3", "size": 2, "stride": 1},
                {"type": "fc", "name": "fc4", "units": 16, "input": "all", "init": {"weight_std": 0.2, "bias": 0.1}},
                {"type": "relu", "name": "relu4"},
                {"type": "dropout", "name": "drop4", "p": 0.5},
                {"type": "fc", "name": "fc5", "units": 6, "input": "all", "init": {"weight_std": 0.2}},
            ],
            "optim": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "bias_lr_mult": 1.0, "bias_decay": True},
        },
    },
    "net145_tiny": {
        "seed": 5,
        "step": 0,
        "lr": 0.02,
        "batch": 2,
        "spec": {
            "name": "net145-tiny",
            "input": {"channels": 3, "size": 14},
            "towers": 2,
            "layers": [
                {"type": "conv", "name": "conv1", "filters": 8, "kernel": 4, "stride": 2, "pad": 0, "pad_end": 2, "init": {"weight_std": 0.2}},
                {"type": "lrn", "name": "lrn1", "size": 3, "k": 2.0, "alpha": 0.5, "beta": 0.75, "alpha_over_n": True},
                {"type": "max_pool", "name": "pool1", "size": 3, "stride": 2},
                {"type": "tanh", "name": "tanh1"},
                {"type": "conv", "name": "conv2", "filters": 12, "kernel": 3, "pad": 1, "init": {"weight_std": 0.2, "bias": 1.0}},
                {"type": "tanh", "name": "tanh2"},
                {"type": "spatial_norm", "name": "snorm2", "size": 3, "k": 1.0, "alpha": 0.9, "beta": 0.75, "alpha_over_area": True},
                {"type": "conv", "name": "conv3", "filters": 8, "kernel": 3, "pad": 1, "input": "all", "init": {"weight_std": 0.2, "lr_mult": 0.5}},
                {"type": "tanh", "name": "tanh3"},
                {"type": "fc", "name": "fc4", "units": 10, "input": "all", "init": {"weight_std": 0.1, "bias": 0.5}},
                {"type": "tanh", "name": "tanh4"},
                {"type": "dropout", "name": "drop4", "p": 0.3},
                {"type": "fc", "name": "fc5", "units": 5, "input": "all", "placement": "first", "init": {"weight_std": 0.2}},
            ],
            "optim": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "bias_lr_mult": 2.0, "bias_decay": False},
        },
    },
}


def float32_spread(case, params, images, labels, grads):
    """How far the same JAX code run in float32 lands from the float64 gradients, on the measure
    tests/golden_jax.rs uses (per tensor, relative to max(|g|, 1e-2 * max |g| of the tensor)): the
    size of pure float32 rounding, which the engine's own error should match. Printed only."""
    p32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    g32 = jax.grad(loss_fn)(p32, case, jnp.asarray(images, jnp.float32), jnp.asarray(labels))
    worst = 0.0
    for got, want in zip(jax.tree_util.tree_leaves(g32), jax.tree_util.tree_leaves(grads)):
        assert got.dtype == jnp.float32
        got, want = np.asarray(got, np.float64), np.asarray(want)
        worst = max(worst, (np.abs(got - want) / np.maximum(np.abs(want), 1e-2 * np.abs(want).max())).max())
    return worst


def training_step(case, params, velocity, images, labels, step):
    """Loss and gradients at `params` for dropout step `step`, then the SGD update."""
    stepped = dict(case, step=step)
    jp = jax.tree_util.tree_map(jnp.asarray, params)
    forward(stepped, jp, jnp.asarray(images), train=True, check_kinks=True)
    loss, grads = jax.value_and_grad(loss_fn)(jp, stepped, jnp.asarray(images), jnp.asarray(labels))
    new_params, new_velocity = sgd_step(case["spec"], params, velocity, grads, case["lr"])
    return float(loss), grads, new_params, new_velocity


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, case in CASES.items():
        rng = np.random.default_rng(2012)
        spec = case["spec"]
        n = case["batch"]
        size = spec["input"]["size"]
        images = to_f32(rng.uniform(-1.0, 1.0, (n, spec["input"]["channels"], size, size)))
        classes = spec["layers"][-1]["units"]
        labels = rng.integers(0, classes, n)
        params = jax.tree_util.tree_map(to_f32, make_params(spec, rng))
        zero = jax.tree_util.tree_map(np.zeros_like, params)
        jparams = jax.tree_util.tree_map(jnp.asarray, params)

        logits_test = forward(case, jparams, jnp.asarray(images), train=False, check_kinks=True)
        logits = forward(case, jparams, jnp.asarray(images), train=True)
        loss, grads, updated, velocity = training_step(case, params, zero, images, labels, case["step"])
        loss2, _, updated2, _ = training_step(case, updated, velocity, images, labels, case["step"] + 1)
        fixture = {
            "generator": "scripts/golden.py (JAX %s, numpy %s, float64)" % (jax.__version__, np.__version__),
            "spec": spec,
            "seed": case["seed"],
            "step": case["step"],
            "lr": case["lr"],
            "images": f32_list(images),
            "labels": labels.tolist(),
            "params": flat(params, f32_list),
            "logits_test": np.asarray(logits_test).ravel().tolist(),
            "logits": np.asarray(logits).ravel().tolist(),
            "loss": loss,
            "grads": flat(grads),
            "updated": flat(updated),
            "loss2": loss2,
            "updated2": flat(updated2),
        }
        path = os.path.join(OUT_DIR, f"golden_{name}.json")
        with open(path, "w") as f:
            json.dump(fixture, f, separators=(",", ":"))
        spread = float32_spread(case, params, images, labels, grads)
        print(f"{os.path.relpath(path)}: loss {loss:.6f} then {loss2:.6f}, {os.path.getsize(path)} bytes")
        print(f"  the same gradients from JAX in float32: largest relative error {spread:.2e}")


if __name__ == "__main__":
    main()
