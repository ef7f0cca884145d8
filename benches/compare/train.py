#!/usr/bin/env python3
"""Side-by-side training-step benchmark: netc vs PyTorch eager, CPU, 2 threads.

For every (model, batch, input size) configuration, one training step is: forward in training
mode, cross-entropy against random labels, backward, and an SGD update (lr 0.01, momentum 0.9).
Each framework runs in its own process, so each reports its own peak RSS:

  - PyTorch: this script with `--worker` (torchvision's resnet18, or a LeNet-5 equal to
    specs/lenet5.net), `torch.set_num_threads(2)`; a timed step is
    `zero_grad(); loss = cross_entropy(model(x), y); loss.backward(); opt.step()`;
  - netc: `netc bench specs/<m>.net --train --set size=S --batch B --threads 2 --steps N
    --warmup W --json`; a timed step is `Trainer::step` (the same four things).

PyTorch runs first; the number of timed steps comes from its step time and `--budget` (netc then
runs the same number). Run through `benches/compare/run.sh --train` (it makes the venv and builds
netc). Results: a Markdown table on stdout and JSON in target/compare/train_results.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time

THREADS = 2
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# (model, batch, input shape)
CONFIGS = [
    ("lenet5", 64, (1, 28, 28)),
    ("resnet18", 32, (3, 32, 32)),
    ("resnet18", 8, (3, 224, 224)),
]


def vm_hwm():
    """Peak resident memory of this process in bytes (Linux), like netc's `peak_rss_bytes`."""
    try:
        for ln in open("/proc/self/status"):
            if ln.startswith("VmHWM:"):
                return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return None


def vm_rss():
    try:
        for ln in open("/proc/self/status"):
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return None


def step_stats(lat, batch):
    lat = sorted(lat)
    n = len(lat)
    med = lat[n // 2] if n % 2 else 0.5 * (lat[n // 2 - 1] + lat[n // 2])
    return {
        "steps": n,
        "step_ms": {"median": med * 1e3, "mean": sum(lat) / n * 1e3, "min": lat[0] * 1e3,
                    "max": lat[-1] * 1e3, "p90": lat[min(n - 1, round((n - 1) * 0.9))] * 1e3},
        "images_per_s": batch / med,
        "images_per_s_min": batch / lat[-1],
        "images_per_s_max": batch / lat[0],
    }


# --- the PyTorch side, in its own process ------------------------------------------------------

def worker(args):
    """Times PyTorch eager training steps; prints one JSON object."""
    rss_start = vm_rss()
    import torch
    import torch.nn as nn
    import torchvision

    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    rss_import = vm_rss()

    from lenet import LeNet5

    torch.manual_seed(1234)
    if args.model == "lenet5":
        model, classes = LeNet5(), 10
    else:
        model, classes = getattr(torchvision.models, args.model)(weights=None), 1000
    model.train()
    shape = tuple(int(s) for s in args.shape.split("x"))
    x = torch.rand((args.batch, *shape)) * 2 - 1
    y = torch.randint(0, classes, (args.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    first = float(step())
    for _ in range(max(0, args.warmup - 1)):
        step()
    steps = args.steps
    if not steps:  # from the step time and the budget
        t = time.perf_counter()
        step()
        one = time.perf_counter() - t
        steps = int(min(args.max_steps, max(args.min_steps, round(args.budget / max(one, 1e-6)))))
    lat = []
    for _ in range(steps):
        t = time.perf_counter()
        last = step()
        lat.append(time.perf_counter() - t)
    r = step_stats(lat, args.batch)
    r.update({
        "peak_rss_bytes": vm_hwm(), "rss_before_import_bytes": rss_start, "rss_after_import_bytes": rss_import,
        "first_loss": first, "last_loss": float(last), "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
    })
    print(json.dumps(r))


# --- the driver ---------------------------------------------------------------------------------

def run_json(cmd, env=None):
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}{p.stdout}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def torch_run(args, name, batch, shape, steps):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", name, "--batch", str(batch),
           "--shape", "x".join(map(str, shape)), "--warmup", str(args.warmup), "--budget", str(args.budget),
           "--min-steps", str(args.min_steps), "--max-steps", str(args.max_steps)]
    if steps:
        cmd += ["--steps", str(steps)]
    return run_json(cmd, env=PY_ENV)


def netc_run(args, name, batch, shape, steps):
    j = run_json([args.netc, "bench", f"specs/{name}.net", "--train", "--set", f"size={shape[1]}",
                  "--batch", str(batch), "--threads", str(THREADS), "--steps", str(steps),
                  "--warmup", str(args.warmup), "--json"], env=NETC_ENV)
    lat = j["step_ms"]
    j["images_per_s_min"] = batch / (lat["max"] / 1e3)
    j["images_per_s_max"] = batch / (lat["min"] / 1e3)
    return j


def run_config(args, cmp, name, batch, shape):
    tag = f"{name} b{batch} {'x'.join(map(str, shape))}"
    res = {"model": name, "batch": batch, "input": list(shape), "load_before": cmp.loadavg()}
    print(f"== {tag}  (load {res['load_before']})", flush=True)
    # Rounds of PyTorch then netc, back to back: each round's ratio compares the two under the
    # same machine state (on a shared machine the speed drifts by ±10% over minutes); the
    # table shows the round with the median ratio, and every round's ratio.
    rounds = []
    steps = args.steps
    for r in range(max(1, args.rounds)):
        t = cmp.measure(args, "PyTorch", lambda: torch_run(args, name, batch, shape, steps))
        steps = t["steps"]
        n = cmp.measure(args, "netc", lambda: netc_run(args, name, batch, shape, steps))
        rounds.append((n["images_per_s"] / t["images_per_s"], t, n))
        if args.rounds > 1:
            print(f"    round {r + 1}: PyTorch {t['step_ms']['median']:.1f} ms, netc {n['step_ms']['median']:.1f} ms "
                  f"(netc/PyTorch {rounds[-1][0]:.2f})", flush=True)
    res["ratios"] = [x[0] for x in rounds]
    ratio, res["torch"], res["netc"] = sorted(rounds, key=lambda x: x[0])[(len(rounds) - 1) // 2]
    res["steps"], res["warmup"] = steps, args.warmup
    res["netc_over_torch"] = ratio
    res["load_after"] = cmp.loadavg()
    t, n = res["torch"], res["netc"]
    print(f"    {steps} steps: img/s PyTorch {t['images_per_s']:.1f}, netc {n['images_per_s']:.1f} "
          f"(netc/PyTorch {res['netc_over_torch']:.2f}); peak RSS PyTorch {mib(t['peak_rss_bytes'])} MiB, "
          f"netc {mib(n['peak_rss_bytes'])} MiB; loss PyTorch {t['first_loss']:.3f}->{t['last_loss']:.3f}, "
          f"netc {n['first_loss']:.3f}->{n['last_loss']:.3f}; other CPU use {t['others_busy_cores']} / "
          f"{n['others_busy_cores']} cores", flush=True)
    return res


def mib(b):
    return "?" if b is None else f"{b / 1048576:.0f}"


def table(results):
    lines = [
        "| model | batch | input | steps | PyTorch img/s | netc img/s | netc/PyTorch | PyTorch step ms | netc step ms "
        "| PyTorch peak RSS MiB (after import) | netc peak RSS MiB (arena) | netc compile ms | other CPU use (cores) "
        "| netc/PyTorch per round |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]

    def rng(d):
        return f"{d['images_per_s']:.1f} ({d['images_per_s_min']:.1f}–{d['images_per_s_max']:.1f})"

    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {'×'.join(map(str, r['input']))} | – | **error** | | | | | | | | | |")
            continue
        t, n = r["torch"], r["netc"]
        lines.append(
            f"| {r['model']} | {r['batch']} | {'×'.join(map(str, r['input']))} | {r['steps']} | {rng(t)} | {rng(n)} | "
            f"{r['netc_over_torch']:.2f} | {t['step_ms']['median']:.1f} | {n['step_ms']['median']:.1f} | "
            f"{mib(t['peak_rss_bytes'])} ({mib(t['rss_after_import_bytes'])}) | "
            f"{mib(n['peak_rss_bytes'])} ({mib(n['arena_bytes'])}) | {n['compile_ms']:.0f} | "
            f"{t['others_busy_cores']:.1f} / {n['others_busy_cores']:.1f} | "
            f"{', '.join(f'{x:.2f}' for x in r.get('ratios', [r['netc_over_torch']]))} |")
    return "\n".join(lines)


PY_ENV = None
NETC_ENV = None


def main():
    global PY_ENV, NETC_ENV
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--configs", help="comma-separated model:batch:size, e.g. lenet5:64:28,resnet18:32:32 "
                                      "(default: lenet5:64:28, resnet18:32:32, resnet18:8:224)")
    ap.add_argument("--netc", default=os.path.join(ROOT, "target", "release", "netc"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "compare", "train_results.json"))
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: from --budget)")
    ap.add_argument("--budget", type=float, default=15.0, help="seconds of timed steps per framework")
    ap.add_argument("--min-steps", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="budget 4 s, 5–30 steps, 2 warm-up steps")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="before each measurement wait up to SECONDS for idle CPUs, and redo measurements "
                         "disturbed by other processes (see --retries)")
    ap.add_argument("--retries", type=int, default=2, help="with --wait-idle: extra attempts per measurement")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of PyTorch-then-netc per configuration; the table shows the round with the "
                         "median netc/PyTorch ratio and lists every round's (default 3)")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.budget, args.min_steps, args.max_steps, args.warmup = 4.0, 5, 30, 2
    if not os.path.exists(args.netc):
        sys.exit(f"{args.netc} not found: run `cargo build --release` first")

    # The driver borrows compare.py's helpers (idle waits, other processes' CPU use, versions);
    # importing it sets the OPENBLAS environment aside for Python and keeps the original for netc.
    import compare as cmp
    NETC_ENV = cmp.NETC_ENV
    PY_ENV = dict(os.environ)
    import torch
    import torchvision

    cfgs = CONFIGS
    if args.configs:
        cfgs = []
        for c in args.configs.split(","):
            m, b, s = c.split(":")
            cfgs.append((m, int(b), (1 if m == "lenet5" else 3, int(s), int(s))))

    env = {
        "torch": torch.__version__, "torchvision": torchvision.__version__, "threads": THREADS,
        "cpu": cmp.cpu_name(), "nproc": os.cpu_count(), "budget_s": args.budget, "warmup": args.warmup,
        "netc_git": cmp.git_state(), "unset_env_for_python": cmp.UNSET_ENV,
    }
    g = env["netc_git"]
    print(f"torch {torch.__version__} (torchvision {torchvision.__version__}); {env['cpu']}, {os.cpu_count()} CPUs; "
          f"netc at {(g['commit'] or '?')[:10]}" + (f" + uncommitted changes in {len(g['modified'])} files" if g["modified"] else "")
          + f"; load average {cmp.loadavg()}\n", flush=True)
    t0 = time.time()
    results = []

    def save():
        env["wall_s"] = time.time() - t0
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({"env": env, "results": results}, fh, indent=2)

    for name, batch, shape in cfgs:
        try:
            results.append(run_config(args, cmp, name, batch, shape))
        except RuntimeError as e:
            print(f"    !! {e}", flush=True)
            results.append({"model": name, "batch": batch, "input": list(shape), "error": str(e)})
        save()
    print()
    print(f"### Training step: netc vs PyTorch {torch.__version__} eager — {THREADS} threads, SGD momentum 0.9, "
          f"cross-entropy; images/s median (min–max), {env['cpu']}")
    print()
    print(table(results))
    print(f"\nwall time {env['wall_s']:.0f} s; JSON: {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
