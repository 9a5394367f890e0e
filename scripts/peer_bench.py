#!/usr/bin/env python3
"""The peer: the paper's two-tower network in PyTorch + cuDNN on the same GPU, timed the way
`cargo bench --bench ops` and `--bench step` time ours.

    python3 scripts/peer_bench.py [--batch 128] [--repeats 20] [--out DIR] [--device cuda]

The network matches `alexnet model --preset paper` layer for layer: grouped convolutions where a
tower reads only its own maps (conv2, conv4, conv5), full ones where the towers exchange (conv3,
fc6-fc8), LRN with the paper's constants (PyTorch's LocalResponseNorm divides alpha by n, so it is
given alpha·n to compute the paper's alpha), overlapping 3/2 max pooling, dropout 0.5, SGD with
momentum 0.9 and weight decay 0.0005. One difference is unavoidable and stated: LocalResponseNorm
over the grouped 96/256 maps lets the window cross the tower boundary at one channel pair, which
costs the same time.

It prints and writes (DIR/peer.json) images/s of a full training step at each precision ours
runs at: fp32 (TF32 off, NCHW), TF32 (TF32 on for cuDNN and cuBLAS, channels_last) and AMP bf16
(autocast to bfloat16, fp32 master weights and SGD, no loss scaling, channels_last) -- how a
PyTorch user trains fastest on this GPU without compiling; and cuDNN's time per layer (forward
and backward) for the same shapes with TF32 off, timed with CUDA events after warm-up.

`--device cpu` is the CPU peer of `cargo bench --bench step`: fp32 training steps of the
`--cases` (preset:batch, default the step bench's CPU cases cifar:128 and paper:8; `cifar` is
`alexnet model --preset cifar` layer for layer) with `--threads` intra-op threads, NCHW and
channels_last (oneDNN takes either), timed by the wall clock; `--json` prints one line for the
step bench to read. CPU threads only: a second program busy on the same cores makes PyTorch's
OpenMP threads wait on each other (the cifar step went from about 60 to 520 ms on 2 threads
with a compiler running), so time it on a quiet machine.
"""

import argparse
import contextlib
import json
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class PaperNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6 = nn.Linear(9216, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, 1000)
        # The paper's alpha = 1e-4 over n = 5 maps, not divided by n.
        self.lrn = nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)

    def forward(self, x):
        x = F.max_pool2d(self.lrn(F.relu(self.conv1(x))), 3, 2)
        x = F.max_pool2d(self.lrn(F.relu(self.conv2(x))), 3, 2)
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.max_pool2d(F.relu(self.conv5(x)), 3, 2)
        x = torch.flatten(x, 1)
        x = F.dropout(F.relu(self.fc6(x)), 0.5, self.training)
        x = F.dropout(F.relu(self.fc7(x)), 0.5, self.training)
        return self.fc8(x)


class CifarNet(nn.Module):
    """`alexnet model --preset cifar`: two towers of 16, 16 and 32 maps (conv2 grouped, conv3 and
    the classifier reading both towers), LRN after pool1 with alpha not divided by n."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 32, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc4 = nn.Linear(64 * 3 * 3, 10)
        self.lrn = nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)

    def forward(self, x):
        x = self.lrn(F.max_pool2d(F.relu(self.conv1(x)), 3, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 3, 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 3, 2)
        return self.fc4(torch.flatten(x, 1))


# preset: (module, input size, classes)
NETS = {"paper": (PaperNet, 227, 1000), "cifar": (CifarNet, 32, 10)}

DEVICE = "cuda"


def time_ms(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    if DEVICE != "cuda":
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return times
    torch.cuda.synchronize()
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def summary(times):
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


# The training step's precisions: (TF32 allowed, autocast dtype, channels_last).
STEP_PRECISIONS = {
    "fp32": (False, None, False),
    "tf32": (True, None, True),
    "amp_bf16": (True, torch.bfloat16, True),
}


def training_step_bench(batch, repeats, precision, preset="paper"):
    tf32, autocast_dtype, channels_last = STEP_PRECISIONS[precision]
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    layout = torch.channels_last if channels_last else torch.contiguous_format
    module, size, classes = NETS[preset]
    net = module().to(DEVICE).to(memory_format=layout).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
    x = torch.randn(batch, 3, size, size, device=DEVICE).to(memory_format=layout)
    y = torch.randint(0, classes, (batch,), device=DEVICE)

    def step():
        opt.zero_grad(set_to_none=True)
        autocast = (torch.autocast(DEVICE, dtype=autocast_dtype) if autocast_dtype
                    else contextlib.nullcontext())
        with autocast:
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    t = summary(time_ms(step, repeats))
    t["images_per_s"] = batch / t["median_ms"] * 1e3
    t["tf32"], t["autocast"] = tf32, str(autocast_dtype) if autocast_dtype else None
    t["channels_last"] = channels_last
    return t


def layer_bench(batch, repeats):
    """cuDNN/cuBLAS time per layer at the same shapes, forward and backward (TF32 off)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    net = PaperNet().to(DEVICE)
    shapes = {
        "conv1": (net.conv1, (3, 227, 227)),
        "conv2": (net.conv2, (96, 27, 27)),
        "conv3": (net.conv3, (256, 13, 13)),
        "conv4": (net.conv4, (384, 13, 13)),
        "conv5": (net.conv5, (384, 13, 13)),
        "fc6": (net.fc6, (9216,)),
        "fc7": (net.fc7, (4096,)),
        "fc8": (net.fc8, (4096,)),
        "lrn1": (net.lrn, (96, 55, 55)),
        "lrn2": (net.lrn, (256, 27, 27)),
        "pool1": (lambda t: F.max_pool2d(t, 3, 2), (96, 55, 55)),
        "pool2": (lambda t: F.max_pool2d(t, 3, 2), (256, 27, 27)),
        "pool5": (lambda t: F.max_pool2d(t, 3, 2), (256, 13, 13)),
    }
    rows = {}
    for name, (layer, shape) in shapes.items():
        x = torch.randn(batch, *shape, device=DEVICE, requires_grad=True)
        out = layer(x)
        grad = torch.randn_like(out)
        fwd = summary(time_ms(lambda: layer(x), repeats))
        bwd = summary(time_ms(lambda: torch.autograd.grad(layer(x), [x] + [p for p in getattr(layer, "parameters", lambda: [])()], grad), repeats))
        rows[name] = {"forward": fwd, "forward+backward": bwd}
    return rows


def cpu_steps(cases, repeats, threads):
    """fp32 training steps on the CPU, NCHW and channels_last (oneDNN takes either; the faster is
    the peer), with `threads` intra-op threads, as ours uses rayon's."""
    torch.set_num_threads(threads)
    rows = []
    for case in cases:
        preset, batch = case.split(":")
        for layout in ("nchw", "channels_last"):
            precision = "fp32" if layout == "nchw" else "fp32_channels_last"
            STEP_PRECISIONS["fp32_channels_last"] = (False, None, True)
            t = training_step_bench(int(batch), repeats, precision, preset)
            rows.append({"preset": preset, "batch": int(batch), "layout": layout,
                         "threads": threads, **t})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--cases", default="cifar:128,paper:8",
                    help="CPU only: preset:batch pairs, the step bench's CPU cases")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="CPU only: intra-op threads")
    ap.add_argument("--json", action="store_true",
                    help="CPU only: print the rows as one JSON line (the step bench reads it)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cpu":
        rows = cpu_steps(args.cases.split(","), args.repeats, args.threads)
        if args.json:
            print(json.dumps({"torch": torch.__version__, "rows": rows}))
            return
        print(f"PyTorch {torch.__version__} CPU, {args.threads} threads, fp32 training step")
        for r in rows:
            print(f"{r['preset']:<6} batch {r['batch']:>4} {r['layout']:<14} "
                  f"median {r['median_ms']:9.2f} ms  min {r['min_ms']:9.2f}  "
                  f"{r['images_per_s']:9.1f} images/s")
        return
    result = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "batch": args.batch,
        "steps": {p: training_step_bench(args.batch, args.repeats, p) for p in STEP_PRECISIONS},
        "layers_tf32_off": layer_bench(args.batch, args.repeats),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "peer.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"PyTorch {result['torch']} cuDNN {result['cudnn']} on {result['gpu']}, batch {args.batch}")
    for key, r in result["steps"].items():
        print(f"step {key:<11} {r['median_ms']:9.2f} ms  {r['images_per_s']:9.1f} images/s")
    print(f"{'layer':<8} {'fwd ms':>9} {'fwd+bwd ms':>11}")
    for name, r in result["layers_tf32_off"].items():
        print(f"{name:<8} {r['forward']['median_ms']:9.3f} {r['forward+backward']['median_ms']:11.3f}")


if __name__ == "__main__":
    main()
