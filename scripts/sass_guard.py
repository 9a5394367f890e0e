#!/usr/bin/env python3
"""The static regression guard of the GEMM kernels: reads the sm_90 SASS and the ptxas report of
each kernel and checks it against benches/sass-floors.txt.

usage: sass_guard.py FLOORS OUT_DIR MODULE...   (OUT_DIR holds MODULE.sass and MODULE.ptxas.txt)

For every kernel named in FLOORS: no spills, at most the registers listed, and in its hot loop
(the innermost loop, by backward branches, with the most of the kernel's math instruction: FFMA
for the fp32 SIMT kernels, HMMA for the tensor-core ones) at least the share of that
instruction listed, the share the kernel reached when it was last tuned. Also reports the math
instructions per shared-memory load (LDS) of the hot loop. Prints one row per kernel, writes
OUT_DIR/sass-guard.json, and exits 1 if any kernel is below its floor (or missing).
"""
import json
import re
import sys
from collections import Counter

FUNCTION = re.compile(r"^\s*Function : (\S+)")
INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def read_sass(path):
    kernels, current = {}, None
    with open(path) as f:
        for line in f:
            m = FUNCTION.match(line)
            if m:
                current = kernels.setdefault(m.group(1), [])
                continue
            m = INSTRUCTION.match(line)
            if m and current is not None:
                current.append((int(m.group(1), 16), m.group(3), m.group(4)))
    return kernels


def read_ptxas(path, arch="sm_90"):
    out, name = {}, None
    with open(path) as f:
        for line in f:
            m = re.search(r"Compiling entry function '([^']+)' for '(\w+)'", line)
            if m:
                name = m.group(1) if m.group(2) == arch else None
                if name:
                    out[name] = {"registers": 0, "spill_bytes": 0}
                continue
            if not name:
                continue
            m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if m:
                out[name]["spill_bytes"] = int(m.group(1)) + int(m.group(2))
            m = re.search(r"Used (\d+) registers", line)
            if m:
                out[name]["registers"] = int(m.group(1))
    return out


def hot_loop(instructions, math):
    """(instructions, `math` count, opcode counts) of the innermost loop with the most `math`
    instructions (FFMA or HMMA), or None."""
    loops = set()
    for addr, op, rest in instructions:
        if op.split(".")[0] == "BRA":
            m = re.search(r"0x([0-9a-f]+)", rest)
            if m and int(m.group(1), 16) <= addr:
                loops.add((int(m.group(1), 16), addr))
    innermost = [
        (lo, hi)
        for lo, hi in loops
        if not any((lo2, hi2) != (lo, hi) and lo <= lo2 and hi2 <= hi for lo2, hi2 in loops)
    ]
    best = None
    for lo, hi in innermost:
        body = [op for addr, op, _ in instructions if lo <= addr <= hi]
        count = sum(1 for op in body if op.split(".")[0] == math)
        if best is None or count > best[1]:
            best = (len(body), count, Counter(op.split(".")[0] for op in body))
    return best


def read_floors(path):
    floors = {}
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line:
                continue
            name, math, share, regs = line.split()
            if math not in ("FFMA", "HMMA"):
                raise SystemExit(f"{path}: {name}: the math instruction is FFMA or HMMA, not {math}")
            floors[name] = (math, float(share), int(regs))
    return floors


def main():
    floors_path, out_dir, *modules = sys.argv[1:]
    floors = read_floors(floors_path)
    sass, ptxas = {}, {}
    for m in modules:
        sass.update(read_sass(f"{out_dir}/{m}.sass"))
        ptxas.update(read_ptxas(f"{out_dir}/{m}.ptxas.txt"))
    rows, failed = [], False
    print(f"{'kernel':38s} {'regs':>4s} {'spill':>5s} {'loop':>5s} {'math':>4s} {'count':>5s} "
          f"{'share':>6s} {'floor':>6s} {'/LDS':>5s}")
    for name, (math, floor, max_regs) in sorted(floors.items()):
        problems = []
        if name not in sass or name not in ptxas:
            problems.append("not built")
            row = {"kernel": name}
            print(f"{name:38s} FAIL: not built")
        else:
            p, loop = ptxas[name], hot_loop(sass[name], math)
            n, count, ops = loop if loop else (0, 0, Counter())
            share = 100.0 * count / n if n else 0.0
            per_lds = count / ops["LDS"] if ops["LDS"] else float("inf")
            row = {"kernel": name, "registers": p["registers"], "spill_bytes": p["spill_bytes"],
                   "hot_loop_instructions": n, "math": math, "math_count": count,
                   "math_share": round(share, 2), "floor": floor,
                   "math_per_shared_load": round(per_lds, 3) if ops["LDS"] else None}
            if p["spill_bytes"]:
                problems.append(f"spills {p['spill_bytes']} bytes")
            if p["registers"] > max_regs:
                problems.append(f"{p['registers']} registers > {max_regs}")
            # Floors are written to 0.1 from shares rounded to 0.01: compare those.
            if round(share, 2) + 1e-9 < floor:
                problems.append(f"{math} share {share:.1f}% < {floor:.1f}%")
            print(f"{name:38s} {p['registers']:4d} {p['spill_bytes']:5d} {n:5d} {math:>4s} {count:5d} "
                  f"{share:5.1f}% {floor:5.1f}% {per_lds:5.2f}"
                  + ("  FAIL: " + "; ".join(problems) if problems else ""))
        row["problems"] = problems
        rows.append(row)
        failed |= bool(problems)
    with open(f"{out_dir}/sass-guard.json", "w") as f:
        json.dump(rows, f, indent=1)
    if failed:
        print("sass-guard: FAILED (a kernel fell below its floor in benches/sass-floors.txt)")
        sys.exit(1)
    print("sass-guard: every kernel at or above its floor")


if __name__ == "__main__":
    main()
