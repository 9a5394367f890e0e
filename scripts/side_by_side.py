#!/usr/bin/env python3
"""Our benchmarks and the PyTorch + cuDNN peer's in one table, from their JSON files:

    python3 scripts/side_by_side.py OPS_JSON STEP_JSON PEER_JSON

OPS_JSON is `cargo bench --bench ops`'s target/bench/ops.json, STEP_JSON `--bench step`'s
target/bench/step.json, PEER_JSON scripts/peer_bench.py's peer.json (all from the same GPU).

Per layer: our ops bench times one tower's share (half the maps or units), the peer the whole
layer (grouped where the towers do not exchange), so ours is shown as two towers' time, as when
both run on one GPU one after the other. Forward+backward is ours forward + data gradient + filter
gradient (conv, fc) or forward + backward (LRN, pooling), and the peer's autograd of the layer
with respect to its input and parameters. A ratio below 1 means we are faster.
"""

import json
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    ops, step, peer = (json.load(open(p)) for p in sys.argv[1:])
    ours = {r["op"]: r["median_ms"] for r in ops["ops"]}
    print(f"ours on {ops['device']}, batch {ops['batch']}; peer PyTorch {peer['torch']} "
          f"cuDNN {peer['cudnn']} on {peer['gpu']}, batch {peer['batch']}, TF32 off")
    if ops["batch"] != peer["batch"]:
        print(f"warning: different batches (ours {ops['batch']}, peer {peer['batch']}): not comparable")
    print(f"{'layer':<7} {'ours fwd':>9} {'peer fwd':>9} {'ratio':>6}   "
          f"{'ours f+b':>9} {'peer f+b':>9} {'ratio':>6}   (ms)")
    for name, p in peer["layers_tf32_off"].items():
        fwd = ours.get(f"{name} forward")
        if fwd is None:
            print(f"{name:<7} (not in our ops bench)")
            continue
        back = [f"{name} data grad", f"{name} filter grad"] if name.startswith(("conv", "fc")) \
            else [f"{name} backward"]
        if any(b not in ours for b in back):
            print(f"{name:<7} (no backward rows in our ops bench)")
            continue
        fwd2 = 2 * fwd
        both2 = 2 * (fwd + sum(ours[b] for b in back))
        pf, pb = p["forward"]["median_ms"], p["forward+backward"]["median_ms"]
        print(f"{name:<7} {fwd2:9.3f} {pf:9.3f} {fwd2 / pf:6.2f}   {both2:9.3f} {pb:9.3f} {both2 / pb:6.2f}")
    print()
    print(f"{'whole training step':<40} {'ms':>9} {'images/s':>10}")
    # The peer's input stays on the GPU: compare with ours resident; uploaded is what training
    # pays. Like with like: our fp32 with the peer's TF32 off, our tf32 with TF32 on, our bf16
    # with AMP bf16.
    peer_of = {"fp32": "fp32", "tf32": "tf32", "bf16": "amp_bf16"}
    for prec, peer_key in peer_of.items():
        for r in step:
            if r["preset"] == "paper" and r.get("precision", "fp32") == prec:
                label = f"ours {prec} (paper, {r['batch']}, {r.get('input', 'uploaded')})"
                print(f"{label:<40} {r['median_ms']:9.2f} {r['images_per_s']:10.1f}")
        p = peer.get("steps", {}).get(peer_key)
        if p:
            ours = [r for r in step if r["preset"] == "paper" and r.get("input") == "resident"
                    and r.get("precision", "fp32") == prec]
            ratio = f"  ours resident / peer: {ours[0]['median_ms'] / p['median_ms']:.2f}" if ours else ""
            print(f"{'peer ' + peer_key:<40} {p['median_ms']:9.2f} {p['images_per_s']:10.1f}{ratio}")


if __name__ == "__main__":
    main()
