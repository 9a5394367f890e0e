#!/usr/bin/env python3
"""An alexnet checkpoint as a PyTorch module: the engine's test-time logits, from PyTorch.

    python3 scripts/torch_alexnet.py CHECKPOINT --input X.npy --out LOGITS.npy
    python3 scripts/torch_alexnet.py CHECKPOINT --image photo.jpg [--out LOGITS.npy]

--input takes network inputs already preprocessed (float32 NCHW, 0..255 minus the mean image, see
docs/CHECKPOINT.md); --image preprocesses image files with Pillow as the engine does (up to the
resize filter's rounding, see the document). Without --out the top classes are printed.

As a module (only torch is needed; Pillow for `preprocess`):

    from torch_alexnet import load
    model, spec, meta = load("runs/paper/checkpoint.safetensors")   # eval mode
    logits = model(x)                                               # x: [n, 3, size, size]

The two towers become one network whose tensors hold both towers' maps side by side, tower 0's
first (the engine's `model::grouped`): a layer reading its own tower is a grouped convolution
(groups = towers), a layer reading all towers is a plain one. docs/CHECKPOINT.md says why this is
the same function. The checkpoint file is parsed by hand (safetensors is a JSON header and raw
little-endian bytes), so the `safetensors` package is not needed.
"""

import argparse
import json
import math
import struct
import sys
from collections import OrderedDict

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    if __name__ == "__main__":
        print("error: torch does not import (pip install torch)", file=sys.stderr)
        sys.exit(2)
    raise

FORMAT = "alexnet-checkpoint-1"


def f32(v):
    """The float32 nearest to v, as a Python float (how the engine holds the spec's numbers)."""
    return struct.unpack("<f", struct.pack("<f", float(v)))[0]


# ------------------------------------------------------------------------------------ the file
def read_safetensors(path):
    """(tensors, metadata): every F32 tensor by name, and the `__metadata__` strings."""
    if sys.byteorder != "little":
        raise ValueError("this reader assumes a little-endian machine")
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    if len(buf) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", buf[:8])
    try:
        header = json.loads(buf[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        count = (end - start) // 4
        shape = info["shape"]
        if count != math.prod(shape):
            raise ValueError(f"{path}: tensor {name}: {end - start} bytes for shape {shape}")
        t = torch.frombuffer(buf, dtype=torch.float32, count=count, offset=8 + n + start)
        tensors[name] = t.reshape(shape)
    return tensors, meta


# ------------------------------------------------------------------------------------ the layers
def round_operand(x, precision):
    """An operand of the engine's conv/fc products at `precision` (the spec's `precision` key)."""
    if precision == "fp32":
        return x
    if precision == "bf16":  # to nearest, ties to even
        return x.to(torch.bfloat16).to(torch.float32)
    if precision == "tf32":  # to nearest, ties away from zero; inf and NaN pass through
        bits = x.contiguous().view(torch.int32)
        rounded = ((bits + 0x1000) & ~0x1FFF).view(torch.float32)
        return torch.where(torch.isfinite(x), rounded, x)
    raise ValueError(f"unknown precision {precision!r}")


class Conv(nn.Conv2d):
    """nn.Conv2d plus what the engine's convolutions need: padding `pad` before and `pad_end`
    after each spatial axis (net145's conv1 pads 0 and 3), an input repeated `repeat` times (a
    shared input read by towers that are themselves grouped; 1 in every preset) and the
    products' precision."""

    def __init__(self, cin, cout, k, stride, pad, pad_end, groups, repeat=1, precision="fp32"):
        symmetric = pad == pad_end
        super().__init__(cin * repeat, cout, k, stride, padding=pad if symmetric else 0, groups=groups)
        self.pad_both = None if symmetric else (pad, pad_end, pad, pad_end)
        self.repeat, self.precision = repeat, precision

    def forward(self, x):
        if self.repeat > 1:
            x = x.repeat(1, self.repeat, 1, 1)
        if self.pad_both is not None:
            x = F.pad(x, self.pad_both)
        w = round_operand(self.weight, self.precision)
        return self._conv_forward(round_operand(x, self.precision), w, self.bias)


class Linear(nn.Linear):
    """nn.Linear on the flattened input (C, H, W order), at the products' precision."""

    def __init__(self, inputs, outputs, precision="fp32"):
        super().__init__(inputs, outputs)
        self.precision = precision

    def forward(self, x):
        x = round_operand(x.flatten(1), self.precision)
        return F.linear(x, round_operand(self.weight, self.precision), self.bias)


class GroupedLinear(nn.Module):
    """An fc layer whose towers read only their own tower (`input: own`): tower t's units see
    only tower t's block of the input. No preset has one (every preset's fc reads all towers)."""

    def __init__(self, inputs, outputs, groups, precision="fp32"):
        super().__init__()
        self.groups, self.precision = groups, precision
        self.weight = nn.Parameter(torch.zeros(outputs, inputs // groups))
        self.bias = nn.Parameter(torch.zeros(outputs))

    def forward(self, x):
        g = self.groups
        x = round_operand(x.flatten(1), self.precision).reshape(x.shape[0], g, -1)
        w = round_operand(self.weight, self.precision).reshape(g, -1, x.shape[2])
        return torch.einsum("ngi,goi->ngo", x, w).reshape(x.shape[0], -1) + self.bias


class LRN(nn.Module):
    """Local response normalisation across channels (paper §3.3):
    y[c] = x[c] / (k + alpha' * sum_{j=c-size//2}^{c+size//2} x[j]^2) ** beta, the window clipped
    at the edges of its group of channels (one group per tower), alpha' = alpha / size when the
    spec says alpha_over_n, else alpha. (torch.nn.LocalResponseNorm always divides by size and
    knows no groups, so it is not used.)"""

    def __init__(self, size, k, alpha, beta, alpha_over_n, groups):
        super().__init__()
        self.size, self.groups = size, groups
        self.k, self.beta = f32(k), f32(beta)
        a = f32(alpha)  # the engine: alpha as f64, divided by size, rounded to f32
        self.alpha = f32(a / size) if alpha_over_n else a

    def forward(self, x):
        n, c, h, w = x.shape
        g, half = self.groups, self.size // 2
        sq = (x * x).reshape(n, g, c // g, h, w)
        sq = F.pad(sq, (0, 0, 0, 0, half, half))  # zeros beyond each group's edges
        total = sq[:, :, 0 : c // g]
        for j in range(1, self.size):  # in increasing channel order, as the engine sums
            total = total + sq[:, :, j : j + c // g]
        return x * (self.k + self.alpha * total.reshape(n, c, h, w)).pow(-self.beta)


class SpatialNorm(nn.Module):
    """Same-map response normalisation (net145's snorm2, cuda-convnet's rnorm):
    y = x / (k + alpha' * sum over the size x size neighbourhood of x^2) ** beta, the window
    centred and clipped at the borders, alpha' = alpha / size^2 when alpha_over_area."""

    def __init__(self, size, k, alpha, beta, alpha_over_area):
        super().__init__()
        self.size, self.k, self.beta = size, f32(k), f32(beta)
        a = f32(alpha)
        self.alpha = f32(a / (size * size)) if alpha_over_area else a

    def forward(self, x):
        h, w, half = x.shape[2], x.shape[3], self.size // 2
        sq = F.pad(x * x, (half, half, half, half))
        rows = sq[:, :, :, 0:w]  # sums along each row, then along each column, in order
        for j in range(1, self.size):
            rows = rows + sq[:, :, :, j : j + w]
        box = rows[:, :, 0:h]
        for j in range(1, self.size):
            box = box + rows[:, :, j : j + h]
        return x * (self.k + self.alpha * box).pow(-self.beta)


class PaperDropout(nn.Module):
    """Dropout as the paper and the engine do it: in training a unit is zeroed with probability p
    and the survivors are not rescaled (the masks here are torch's, not the engine's Philox
    ones); at test time every unit is multiplied by 1 - p. (nn.Dropout is inverted dropout:
    identity at test time, which would change the logits by a factor.)"""

    def __init__(self, p):
        super().__init__()
        self.p = f32(p)
        self.scale = f32(1.0 - self.p)

    def forward(self, x):
        if self.training:
            return x * (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * self.scale


# ------------------------------------------------------------------------------------ the network
def build(spec):
    """The whole network of a spec (the checkpoint's `spec` metadata, parsed) as one
    nn.Sequential named by the spec's layers, its weights zero: tensors hold every active tower's
    channels (or units) side by side in tower order."""
    towers = spec["towers"]
    precision = spec.get("precision", "fp32")
    c, h, w = spec["input"]["channels"], spec["input"]["size"], spec["input"]["size"]
    active = towers  # towers holding the previous output (the image is whole on every tower)
    layers = OrderedDict()
    for i, layer in enumerate(spec["layers"]):
        kind, name = layer["type"], layer["name"]
        if kind in ("conv", "fc"):
            placement = layer.get("placement", "split")
            now = 1 if placement == "first" else towers
            # The image (layer 0) or, at an exchange (input "all"), every tower's output.
            shared = i == 0 or layer.get("input", "own") == "all"
            cin = c if i == 0 else (c * active if shared else c)  # per tower
        if kind == "conv":
            k, stride, pad = layer["kernel"], layer.get("stride", 1), layer.get("pad", 0)
            pad_end = layer.get("pad_end", pad)
            g = layer.get("groups", 1)
            if shared:  # every tower reads the same input: groups within a tower only
                repeat = now if g > 1 and now > 1 else 1
                groups = g * repeat
            else:  # each tower reads its own block: one group per tower (times its own groups)
                repeat, groups = 1, g * now
            cout = layer["filters"]  # of the whole layer
            total_in = cin if shared else cin * now
            layers[name] = Conv(total_in, cout, k, stride, pad, pad_end, groups, repeat, precision)
            c, h, w = cout // now, (h + pad + pad_end - k) // stride + 1, (w + pad + pad_end - k) // stride + 1
            active = now
        elif kind == "fc":
            units = layer["units"]
            if shared or now == 1:
                layers[name] = Linear(cin * h * w, units, precision)
            else:
                layers[name] = GroupedLinear(cin * h * w * now, units, now, precision)
            c, h, w, active = units // now, 1, 1, now
        elif kind == "relu":
            layers[name] = nn.ReLU()
        elif kind == "tanh":
            layers[name] = nn.Tanh()
        elif kind == "lrn":
            groups = layer.get("groups", 1) * active
            layers[name] = LRN(layer["size"], layer["k"], layer["alpha"], layer["beta"], layer.get("alpha_over_n", False), groups)
        elif kind == "spatial_norm":
            layers[name] = SpatialNorm(layer["size"], layer["k"], layer["alpha"], layer["beta"], layer.get("alpha_over_area", False))
        elif kind == "max_pool":
            size, stride = layer["size"], layer["stride"]
            layers[name] = nn.MaxPool2d(size, stride)  # no padding, floor: (h - size) // stride + 1
            h, w = (h - size) // stride + 1, (w - size) // stride + 1
        elif kind == "dropout":
            layers[name] = PaperDropout(layer["p"])
        else:
            raise ValueError(f"layer {name}: unknown type {kind!r}")
    return nn.Sequential(layers)


def load_weights(model, spec, tensors):
    """Copies `<layer>.<tower>.weight|bias` into `model`, concatenating the towers along the
    output dimension in tower order (tower t's units become units t*k .. (t+1)*k)."""
    for layer in spec["layers"]:
        if layer["type"] not in ("conv", "fc"):
            continue
        name = layer["name"]
        towers = 1 if layer.get("placement", "split") == "first" else spec["towers"]
        module = getattr(model, name)
        for part in ("weight", "bias"):
            parts = []
            for t in range(towers):
                key = f"{name}.{t}.{part}"
                if key not in tensors:
                    raise ValueError(f"the checkpoint lacks tensor {key}")
                parts.append(tensors[key])
            whole = torch.cat(parts, 0)
            target = getattr(module, part)
            if tuple(whole.shape) != tuple(target.shape):
                raise ValueError(f"{name}.{part}: the checkpoint's towers make {tuple(whole.shape)}, the spec {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(whole)
    return model


def load(path):
    """(model, spec, meta) for a checkpoint: the model in eval mode (test-time dropout scaling),
    returning the engine's logits (before the softmax) for a float32 [n, 3, size, size] input.
    meta holds the other metadata parsed (`state`, `data`, `inference`, `checksums`; absent keys
    None) and `mean`, the mean image tensor [3, base, base] (or None)."""
    tensors, raw = read_safetensors(path)
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: not an alexnet checkpoint (metadata format {raw.get('format')!r})")
    spec = json.loads(raw["spec"])
    meta = {key: (json.loads(raw[key]) if key in raw else None) for key in ("state", "data", "inference", "checksums")}
    meta["format"] = raw["format"]
    meta["mean"] = tensors.get("inference.mean")
    model = load_weights(build(spec), spec, tensors)
    return model.eval(), spec, meta


# ------------------------------------------------------------------------------------ images
def preprocess(paths, spec, meta, mean=None, base=None):
    """Network inputs [n, 3, size, size] for image files, as the engine's `predict` makes them
    (centre crop): decode to 8-bit RGB; the centred square of side min(w, h) resized to
    base x base (bilinear, widened when shrinking; pixels outside the square feed the filter);
    the centre size x size window, as float 0..255, minus the mean image's centre window."""
    from PIL import Image

    if mean is None:
        mean = meta["mean"]
    if mean is None:
        raise ValueError("the checkpoint keeps no mean image (an older one): pass its stats file's mean")
    base = base or mean.shape[1]
    size = spec["input"]["size"]
    off = (base - size) // 2
    out = []
    for p in paths:
        img = Image.open(p)
        img.load()
        img = img.convert("RGB")
        w, h = img.size
        side = min(w, h)
        x0, y0 = (w - side) // 2, (h - side) // 2
        if (w, h) != (base, base):
            if side == base:
                img = img.crop((x0, y0, x0 + side, y0 + side))
            else:
                box = (x0, y0, x0 + side, y0 + side)
                img = img.resize((base, base), Image.Resampling.BILINEAR, box=box)
        pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(base, base, 3)
        chw = pixels.permute(2, 0, 1).to(torch.float32)
        window = (slice(None), slice(off, off + size), slice(off, off + size))
        out.append(chw[window] - mean[window])
    return torch.stack(out)


# ------------------------------------------------------------------------------------ .npy
def read_npy(path):
    """A float32 C-order .npy file as a tensor (numpy is not needed)."""
    import ast

    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not a .npy file")
    major = data[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", data[8:10])
        start = 10
    else:
        (hlen,) = struct.unpack("<I", data[8:12])
        start = 12
    header = ast.literal_eval(data[start : start + hlen].decode("latin1"))
    if header["descr"] != "<f4" or header["fortran_order"]:
        raise ValueError(f"{path}: expected little-endian float32 in C order, found {header}")
    shape = tuple(header["shape"])
    count = math.prod(shape)
    return torch.frombuffer(bytearray(data[start + hlen :]), dtype=torch.float32, count=count).reshape(shape)


def write_npy(path, t):
    t = t.detach().to("cpu", torch.float32).contiguous()
    shape = tuple(t.shape)
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % (repr(shape),)
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * (pad % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        values = t.flatten().tolist()
        f.write(struct.pack("<%df" % len(values), *values))


# ------------------------------------------------------------------------------------ CLI
def main():
    ap = argparse.ArgumentParser(description="The engine's logits for a checkpoint, from PyTorch (docs/CHECKPOINT.md).")
    ap.add_argument("checkpoint", help="an alexnet .safetensors checkpoint")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="float32 NCHW .npy of preprocessed network inputs")
    src.add_argument("--image", nargs="+", help="image files, preprocessed here with Pillow")
    ap.add_argument("--out", help="write the logits [n, classes] here as float32 .npy")
    ap.add_argument("--save-input", metavar="FILE", help="also write the network inputs as float32 .npy")
    ap.add_argument("--top", type=int, default=5, help="classes printed per input without --out")
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda); TF32 is turned off")
    args = ap.parse_args()

    try:
        model, spec, meta = load(args.checkpoint)
        if args.input:
            x = read_npy(args.input)
        else:
            try:
                x = preprocess(args.image, spec, meta)
            except ImportError:
                print("error: --image needs Pillow (pip install pillow)", file=sys.stderr)
                return 2
        size = spec["input"]["size"]
        if x.dim() != 4 or tuple(x.shape[1:]) != (spec["input"]["channels"], size, size):
            raise ValueError(f"input of shape {tuple(x.shape)}; the network takes [n, {spec['input']['channels']}, {size}, {size}]")
        if args.save_input:
            write_npy(args.save_input, x)
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on a GPU too
        torch.backends.cudnn.allow_tf32 = False
        model = model.to(args.device)
        with torch.no_grad():
            logits = model(x.to(args.device)).cpu()
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.out:
        write_npy(args.out, logits)
        return 0
    classes = (meta["inference"] or {}).get("classes") or []
    probs = torch.softmax(logits, 1)
    names = args.image or [f"input {i}" for i in range(len(x))]
    for name, row in zip(names, probs):
        print(name)
        top = torch.topk(row, min(args.top, row.numel()))
        for p, c in zip(top.values.tolist(), top.indices.tolist()):
            label = classes[c] if c < len(classes) else f"class {c}"
            print(f"  {100 * p:6.2f}%  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
