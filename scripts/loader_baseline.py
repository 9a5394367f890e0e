#!/usr/bin/env python3
"""The Pillow + NumPy baseline for `cargo bench --bench loader`: the same work per training image
as our Rust loader, on one core, so the bench can print how many times faster ours is per core.

    python3 scripts/loader_baseline.py --list FILE [--base 256] [--crop 227] [--batch 128]
        [--passes 3] [--warmup 1] [--seed 0] [--json]

FILE holds one image a line: `PATH` (the whole file) or `PATH<TAB>OFFSET<TAB>LENGTH` (LENGTH bytes
at byte OFFSET of PATH, e.g. a JPEG member of an uncompressed tar shard; each such PATH is opened
once and read with os.pread). Per image, timed by stage with time.perf_counter:

  read     the encoded bytes (a whole-file entry is opened, read and closed, as our folder store
           does; a shard entry is one pread on its kept handle);
  decode   Image.open(io.BytesIO(bytes)), .load(), then .convert("RGB") unless already RGB;
  resize   the centred square of side s = min(w, h), corner ((w-s)//2, (h-s)//2), resized to
           BASE x BASE with BILINEAR, the square passed as box= (no crop copy); none at all when
           the image is already BASE x BASE;
  augment  np.asarray (uint8 HWC), then straight into slot i % BATCH of a preallocated float32
           [BATCH, 3, CROP, CROP] array: a random CROP x CROP window (corner uniform in
           0..=BASE-CROP), mirrored with probability 1/2, minus a fixed float32 mean image
           [3, BASE, BASE] (120.0 everywhere) cut at the same window, plus PCA colour noise:
           alpha ~ N(0, 0.1^2), three per image, shift_c = sum_i eigvecs[i][c] * alpha_i *
           sqrt(eigvals[i]) with eigvals [4000, 250, 60] (0..255^2 units) and the rows of
           eigvecs [[0.58, 0.58, 0.57], [-0.71, 0, 0.71], [0.41, -0.82, 0.41]] normalised.

All randomness comes from numpy's default_rng(--seed). Images that cannot be read or decoded are
reported once on stderr (`skipped PATH: reason`) and left out of the count. Each pass reports
images/s (images / wall time of the pass, all stages) and ms per image per stage; the result is
the median over the timed passes, after --warmup untimed ones.

One process, one thread on purpose: the bench compares per core, so BLAS/OpenMP pools are pinned to
one thread before NumPy is imported (and Pillow decodes and resizes on the calling thread).
"""

import argparse
import io
import json
import os
import statistics
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

try:
    import numpy as np
    import PIL
    from PIL import Image
except ImportError:
    print("loader_baseline: Pillow and NumPy are needed (pip install pillow numpy)", file=sys.stderr)
    sys.exit(3)

BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
EIGVALS = np.array([4000.0, 250.0, 60.0])
EIGVECS = np.array([[0.58, 0.58, 0.57], [-0.71, 0.0, 0.71], [0.41, -0.82, 0.41]])
EIGVECS /= np.linalg.norm(EIGVECS, axis=1, keepdims=True)


def fail(message):
    print(f"loader_baseline: {message}", file=sys.stderr)
    sys.exit(2)


def read_list(path):
    """[(path, offset, length)] with offset None for a whole file; exits 2 on a bad list."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        fail(f"cannot read the list {path}: {e.strerror}")
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) == 1:
            entries.append((fields[0], None, None))
        elif len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            entries.append((fields[0], int(fields[1]), int(fields[2])))
        else:
            fail(f"{path} line {number}: expected PATH or PATH<TAB>OFFSET<TAB>LENGTH, got {line!r}")
    if not entries:
        fail(f"the list {path} is empty")
    for p in sorted({e[0] for e in entries}):
        if not os.path.isfile(p):
            fail(f"{p} (in {path}) does not exist or is not a file")
    return entries


def run_pass(entries, handles, args, rng, mean, batch, skipped):
    """One pass over the list: (images, wall seconds, {stage: seconds})."""
    base, crop = args.base, args.crop
    t = {"read": 0.0, "decode": 0.0, "resize": 0.0, "augment": 0.0}
    images = 0
    start = time.perf_counter()
    for index, (path, offset, length) in enumerate(entries):
        t0 = time.perf_counter()
        try:
            if offset is None:
                with open(path, "rb") as f:
                    data = f.read()
            else:
                data = os.pread(handles[path], length, offset)
                if len(data) != length:
                    raise OSError(f"{length} bytes at {offset} asked, {len(data)} there")
            t1 = time.perf_counter()
            im = Image.open(io.BytesIO(data))
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGB")
        except Exception as e:  # a bad image is skipped, as the Rust loader skips it
            if index not in skipped:
                skipped.add(index)
                where = path if offset is None else f"{path}@{offset}"
                reason = "not an image Pillow can identify" if isinstance(
                    e, PIL.UnidentifiedImageError) else e
                print(f"skipped {where}: {reason}", file=sys.stderr)
            continue
        t2 = time.perf_counter()
        w, h = im.size
        if (w, h) != (base, base):
            s = min(w, h)
            x0, y0 = (w - s) // 2, (h - s) // 2
            im = im.resize((base, base), BILINEAR, box=(x0, y0, x0 + s, y0 + s))
        t3 = time.perf_counter()
        pixels = np.asarray(im)
        x, y = rng.integers(0, base - crop + 1, size=2)
        mirror = rng.random() < 0.5
        alpha = rng.normal(0.0, 0.1, size=3)
        shift = ((alpha * np.sqrt(EIGVALS)) @ EIGVECS).astype(np.float32)
        window = pixels[y:y + crop, x:x + crop].transpose(2, 0, 1)
        mean_window = mean[:, y:y + crop, x:x + crop]
        if mirror:
            window, mean_window = window[:, :, ::-1], mean_window[:, :, ::-1]
        out = batch[images % len(batch)]
        np.subtract(window, mean_window, out=out)
        out += shift[:, None, None]
        t4 = time.perf_counter()
        t["read"] += t1 - t0
        t["decode"] += t2 - t1
        t["resize"] += t3 - t2
        t["augment"] += t4 - t3
        images += 1
    return images, time.perf_counter() - start, t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", required=True, help="PATH or PATH<TAB>OFFSET<TAB>LENGTH lines")
    ap.add_argument("--base", type=int, default=256)
    ap.add_argument("--crop", type=int, default=227)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--passes", type=int, default=3, help="timed passes over the whole list")
    ap.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    if not 0 < args.crop <= args.base or args.batch < 1 or args.passes < 1 or args.warmup < 0:
        fail("need 0 < crop <= base, batch >= 1, passes >= 1, warmup >= 0")

    entries = read_list(args.list)
    handles = {p: os.open(p, os.O_RDONLY) for p, off, _ in entries if off is not None}
    rng = np.random.default_rng(args.seed)
    mean = np.full((3, args.base, args.base), 120.0, dtype=np.float32)
    batch = np.zeros((args.batch, 3, args.crop, args.crop), dtype=np.float32)
    skipped = set()

    for _ in range(args.warmup):
        run_pass(entries, handles, args, rng, mean, batch, skipped)
    passes = [run_pass(entries, handles, args, rng, mean, batch, skipped)
              for _ in range(args.passes)]
    images = passes[0][0]
    if images == 0:
        fail(f"no image in {args.list} could be read and decoded")

    result = {"tool": "pillow", "pillow": PIL.__version__, "numpy": np.__version__,
              "images": images, "passes": [round(n / wall, 2) for n, wall, _ in passes]}
    result["images_per_s"] = round(statistics.median(result["passes"]), 2)
    for stage in ("read", "decode", "resize", "augment"):
        per_image = [t[stage] * 1e3 / n for n, _, t in passes]
        result[f"{stage}_ms"] = round(statistics.median(per_image), 4)
    result.update(threads=1, base=args.base, crop=args.crop)

    if args.json:
        print(json.dumps(result))
    else:
        print(f"Pillow {result['pillow']} + NumPy {result['numpy']}, 1 thread, "
              f"{images} images, base {args.base}, crop {args.crop}")
        print("passes (images/s): " + ", ".join(f"{p:.1f}" for p in result["passes"]))
        print(f"{'images/s':>10} {'read ms':>9} {'decode ms':>10} {'resize ms':>10} {'augment ms':>11}")
        print(f"{result['images_per_s']:>10.1f} {result['read_ms']:>9.3f} {result['decode_ms']:>10.3f} "
              f"{result['resize_ms']:>10.3f} {result['augment_ms']:>11.3f}")


if __name__ == "__main__":
    main()
