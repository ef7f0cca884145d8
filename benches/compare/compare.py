#!/usr/bin/env python3
"""Side-by-side inference benchmark: netc vs PyTorch (eager) vs ONNX Runtime, CPU, 2 threads.

For every (model, batch) configuration:
  1. build the PyTorch model (torchvision, or LeNet-5 defined below exactly like specs/lenet5.net),
     randomize its batchnorm statistics, eval mode, save the state_dict as safetensors;
  2. correctness: `netc run` on the same random input must agree with PyTorch
     (||netc - torch|| / ||torch|| <= 1e-4), and so must ONNX Runtime on the opset-17 export;
     a configuration that fails is not timed;
  3. timing, one framework after the other for this configuration (back to back, to limit drift):
     PyTorch eager (torch.inference_mode), ONNX Runtime, `netc bench --json`; same batch, same
     number of warm-up and timed iterations, 2 threads each.

Run through benches/compare/run.sh (it makes the venv and builds netc). Results: a Markdown table
on stdout and JSON in target/compare/results.json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow numpy down on this machine: drop them for this
# (Python) process before numpy is imported, but hand the original environment to netc.
NETC_ENV = dict(os.environ)
UNSET_ENV = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
for _k in UNSET_ENV:
    del os.environ[_k]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

THREADS = 2
TOL = 1e-4
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

torch.set_num_threads(THREADS)
torch.set_num_interop_threads(1)


from lenet import LeNet5  # noqa: E402


def build(name):
    tv = torchvision.models
    if name == "lenet5":
        return LeNet5()
    if name == "googlenet":
        return tv.googlenet(weights=None, aux_logits=False, init_weights=False, transform_input=False)
    return getattr(tv, name)(weights=None)


IMG = (3, 224, 224)
MNIST = (1, 28, 28)
# (model, batch, input shape); "quick" marks the subset run by --quick.
CONFIGS = [
    ("lenet5", 1, MNIST, True),
    ("lenet5", 256, MNIST, True),
    ("resnet18", 1, IMG, True),
    ("resnet18", 16, IMG, True),
    ("resnet50", 1, IMG, False),
    ("resnet50", 16, IMG, False),
    ("googlenet", 16, IMG, False),
    ("alexnet", 16, IMG, False),
    ("vgg16", 16, IMG, False),
]


def randomize_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.num_batches_tracked.fill_(int(torch.randint(0, 1000, (1,), generator=gen)))


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def loadavg():
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return None


def cpu_busy(interval=1.0):
    """Cores' worth of CPU time used by everything on the machine over `interval` seconds."""
    def snap():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = snap()
    time.sleep(interval)
    t1, i1 = snap()
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(t1 - t0, 1))


def wait_idle(max_wait, busy_max=0.3):
    """Waits (at most `max_wait` s) until the machine looks idle; returns the last reading."""
    t = time.time()
    b = cpu_busy()
    while b > busy_max and time.time() - t < max_wait:
        b = cpu_busy(2.0)
    return {"busy_cores": round(b, 2), "waited_s": round(time.time() - t, 1)}


def others_busy(fn):
    """Runs fn(); returns (its result, cores' worth of CPU used meanwhile by *other* processes):
    the machine's busy time from /proc/stat minus this process's and its children's CPU time."""
    import resource

    def snap():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        own = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for f in ("ru_utime", "ru_stime"))
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"), own, time.perf_counter()
    b0, o0, t0 = snap()
    r = fn()
    b1, o1, t1 = snap()
    r["others_busy_cores"] = round(max(0.0, (b1 - b0) - (o1 - o0)) / (t1 - t0), 2)
    return r


def stats(lat_s, batch):
    lat = sorted(lat_s)
    med = lat[len(lat) // 2] if len(lat) % 2 else 0.5 * (lat[len(lat) // 2 - 1] + lat[len(lat) // 2])
    return {
        "iters": len(lat),
        "latency_ms": {"median": med * 1e3, "min": lat[0] * 1e3, "max": lat[-1] * 1e3},
        "images_per_s": batch / med,
        "images_per_s_min": batch / lat[-1],
        "images_per_s_max": batch / lat[0],
    }


def time_fn(fn, batch, warmup, iters):
    for _ in range(warmup):
        fn()
    lat = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    return stats(lat, batch)


def netc(args, *cmd):
    p = subprocess.run([args.netc, *cmd], cwd=ROOT, env=NETC_ENV, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"netc {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}{p.stdout}")
    return p.stdout


def ort_session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def export_onnx(model, x, path):
    """Opset 17 with the TorchScript exporter (the dynamo exporter emits opset 18 and cannot
    convert these graphs down to 17); the dynamo exporter only as a fallback."""
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), path, opset_version=17, input_names=["input"],
                              output_names=["output"], dynamo=False)
        how = "torchscript"
    except Exception as e:
        print(f"    TorchScript ONNX export failed ({type(e).__name__}: {e}); trying dynamo=True", flush=True)
        torch.onnx.export(model, (x,), path, opset_version=17, input_names=["input"],
                          output_names=["output"], dynamo=True, external_data=False)
        how = "dynamo"
    opset = [o.version for o in onnx.load(path, load_external_data=False).opset_import if o.domain in ("", "ai.onnx")]
    return how, opset[0] if opset else None


def run_config(args, name, batch, shape, work):
    tag = f"{name}_b{batch}"
    res = {"model": name, "batch": batch, "input": list(shape), "load_before": loadavg()}
    print(f"== {tag}  (load {res['load_before']})", flush=True)
    gen = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    model = build(name)
    randomize_bn(model, gen)
    model.eval()
    x = torch.randn((batch, *shape), generator=gen)
    wpath = os.path.join(work, f"{name}.safetensors")
    if not os.path.exists(wpath):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, wpath)
    xpath = os.path.join(work, f"{tag}_x.npy")
    ypath = os.path.join(work, f"{tag}_y_netc.npy")
    np.save(xpath, x.numpy())
    with torch.inference_mode():
        y_ref = model(x).numpy()

    # --- correctness -------------------------------------------------------------------------
    spec = f"specs/{name}.net"
    cmd = ["run", spec, "--weights", wpath, "--input", xpath, "--output", ypath, "--threads", str(THREADS)]
    res["netc_run_cmd"] = f"{args.netc} " + " ".join(cmd)
    try:
        netc(args, *cmd)
        res["rel_err_netc"] = rel_err(np.load(ypath), y_ref)
    except Exception as e:
        res["rel_err_netc"] = None
        res["error"] = str(e)
    onnx_path = os.path.join(work, f"{tag}.onnx")
    how, opset = export_onnx(model, x, onnx_path)
    sess = ort_session(onnx_path)
    iname = sess.get_inputs()[0].name
    xn = x.numpy()
    res["rel_err_ort"] = rel_err(sess.run(None, {iname: xn})[0], y_ref)
    res["onnx_export"] = {"exporter": how, "opset": opset}
    print(f"    rel err vs PyTorch: netc {res['rel_err_netc']}, ORT {res['rel_err_ort']:.2e}", flush=True)
    ok = res["rel_err_netc"] is not None and res["rel_err_netc"] <= TOL
    res["correct"] = ok
    if not ok:
        print(f"    !! netc disagrees with PyTorch (tolerance {TOL}); not timing {tag}.\n"
              f"       reproduce: {res['netc_run_cmd']}", flush=True)
        if "error" in res:
            print("    " + res["error"].replace("\n", "\n    "), flush=True)
        return res
    if res["rel_err_ort"] > TOL:
        print(f"    !! ORT disagrees with PyTorch ({res['rel_err_ort']:.2e}); timing anyway", flush=True)

    # --- timing: PyTorch, ORT, netc back to back -----------------------------------------------
    with torch.inference_mode():
        model(x)
        t = time.perf_counter()
        model(x)
        one = time.perf_counter() - t
    iters = int(min(args.max_iters, max(args.min_iters, round(args.budget / max(one, 1e-6)))))
    warmup = args.warmup
    res["iters"], res["warmup"] = iters, warmup
    print(f"    one PyTorch pass {one * 1e3:.1f} ms -> {warmup} warm-up + {iters} timed iterations each", flush=True)
    with torch.inference_mode():
        res["torch"] = measure(args, "PyTorch", lambda: time_fn(lambda: model(x), batch, warmup, iters))
    res["ort"] = measure(args, "ORT", lambda: time_fn(lambda: sess.run(None, {iname: xn}), batch, warmup, iters))
    del sess
    res["netc"] = measure(args, "netc", lambda: netc_bench(args, spec, batch, iters, warmup))
    res["netc_over_torch"] = res["netc"]["images_per_s"] / res["torch"]["images_per_s"]
    res["netc_over_ort"] = res["netc"]["images_per_s"] / res["ort"]["images_per_s"]
    res["load_after"] = loadavg()
    f = lambda d: f"{d['images_per_s']:.1f}"  # noqa: E731
    print(f"    img/s: PyTorch {f(res['torch'])}, ORT {f(res['ort'])}, netc {f(res['netc'])}"
          f"  (netc/PyTorch {res['netc_over_torch']:.2f}, netc/ORT {res['netc_over_ort']:.2f}); "
          f"other processes' CPU use during each: {res['torch']['others_busy_cores']}, "
          f"{res['ort']['others_busy_cores']}, {res['netc']['others_busy_cores']} cores", flush=True)
    return res


def measure(args, what, fn):
    """With --wait-idle: waits for an idle machine, measures, and measures again (up to
    --retries times) when other processes used more than 0.3 cores meanwhile; keeps the
    least disturbed attempt."""
    best = None
    for attempt in range(1 + (args.retries if args.wait_idle else 0)):
        idle = wait_idle(args.wait_idle) if args.wait_idle else None
        r = others_busy(fn)
        r["idle_check"], r["attempt"] = idle, attempt + 1
        if best is None or r["others_busy_cores"] < best["others_busy_cores"]:
            best = r
        if r["others_busy_cores"] <= 0.3:
            break
        print(f"    {what}: other processes used {r['others_busy_cores']} cores during attempt {attempt + 1}", flush=True)
    return best


def netc_bench(args, spec, batch, iters, warmup):
    out = netc(args, "bench", spec, "--batch", str(batch), "--threads", str(THREADS),
               "--iters", str(iters), "--warmup", str(warmup), "--json")
    j = json.loads(out.strip().splitlines()[-1])
    lat = j["latency_ms"]
    return {
        "iters": j["iters"],
        "latency_ms": {"median": lat["median"], "min": lat["min"], "max": lat["max"], "p90": lat["p90"]},
        "images_per_s": j["images_per_s"],
        "images_per_s_min": batch / (lat["max"] / 1e3),
        "images_per_s_max": batch / (lat["min"] / 1e3),
        "compile_ms": j["compile_ms"],
        "frontend_ms": j["frontend_ms"],
        "peak_rss_bytes": j.get("peak_rss_bytes"),
    }


def torch_compile_cmp(args, work):
    """netc compile time vs torch.compile (inductor) for resnet18 batch 16."""
    print("== torch.compile vs netc compile, resnet18 batch 16", flush=True)
    torch._dynamo.reset()
    model = build("resnet18").eval()
    x = torch.randn(16, *IMG)
    with torch.inference_mode():
        t = time.perf_counter()
        cm = torch.compile(model)
        cm(x)
        first = time.perf_counter() - t
        steady = time_fn(lambda: cm(x), 16, 1, args.min_iters)
    j = json.loads(netc(args, "bench", "specs/resnet18.net", "--batch", "16", "--threads", str(THREADS),
                        "--iters", "1", "--warmup", "0", "--json").strip().splitlines()[-1])
    r = {"torch_compile_first_call_s": first, "torch_compile_images_per_s": steady["images_per_s"],
         "netc_compile_ms": j["compile_ms"], "netc_frontend_ms": j["frontend_ms"]}
    print(f"    torch.compile first call {first:.1f} s (steady {steady['images_per_s']:.1f} img/s); "
          f"netc front end {j['frontend_ms']:.1f} ms + compile {j['compile_ms']:.1f} ms", flush=True)
    return r


def rng(d):
    return f"{d['images_per_s']:.1f} ({d['images_per_s_min']:.1f}–{d['images_per_s_max']:.1f})"


def table(results):
    lines = [
        "| model | batch | iters | rel err netc / ORT | PyTorch img/s | ORT img/s | netc img/s | netc/PyTorch | netc/ORT | netc compile ms | other CPU use (cores) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        e_n = "error" if r.get("rel_err_netc") is None else f"{r['rel_err_netc']:.1e}"
        err = f"{e_n} / {r['rel_err_ort']:.1e}" if "rel_err_ort" in r else e_n
        if "netc" not in r:
            lines.append(f"| {r['model']} | {r['batch']} | – | {err} **FAIL** | – | – | – | – | – | – | |")
            continue
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['iters']} | {err} | {rng(r['torch'])} | {rng(r['ort'])} | "
            f"{rng(r['netc'])} | {r['netc_over_torch']:.2f} | {r['netc_over_ort']:.2f} | {r['netc']['compile_ms']:.0f} | "
            f"{r['torch']['others_busy_cores']:.1f} / {r['ort']['others_busy_cores']:.1f} / {r['netc']['others_busy_cores']:.1f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="lenet5 and resnet18 only, fewer iterations")
    ap.add_argument("--models", help="comma-separated model names (default: all, or the quick set)")
    ap.add_argument("--torch-compile", action="store_true", help="also time torch.compile on resnet18 (slow)")
    ap.add_argument("--netc", default=os.path.join(ROOT, "target", "release", "netc"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "compare", "results.json"))
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed runs per framework and model")
    ap.add_argument("--min-iters", type=int, default=None)
    ap.add_argument("--max-iters", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="before each measurement wait up to SECONDS for the CPUs to be idle, and redo "
                         "measurements disturbed by other processes (see --retries)")
    ap.add_argument("--retries", type=int, default=2, help="with --wait-idle: extra attempts per measurement")
    args = ap.parse_args()
    q = args.quick
    args.budget = args.budget if args.budget is not None else (4.0 if q else 15.0)
    args.min_iters = args.min_iters if args.min_iters is not None else (5 if q else 10)
    args.max_iters = args.max_iters if args.max_iters is not None else (30 if q else 100)
    args.warmup = args.warmup if args.warmup is not None else (2 if q else 3)
    if not os.path.exists(args.netc):
        sys.exit(f"{args.netc} not found: run `cargo build --release` first")
    work = os.path.join(os.path.dirname(args.out), "work")
    os.makedirs(work, exist_ok=True)

    cfgs = [c for c in CONFIGS if c[3] or not q]
    if args.models:
        want = set(args.models.split(","))
        cfgs = [c for c in CONFIGS if c[0] in want]

    env = {
        "torch": torch.__version__, "torchvision": torchvision.__version__, "onnxruntime": ort.__version__,
        "onnx": onnx.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "threads": THREADS, "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "unset_env_for_python": UNSET_ENV, "cpu": cpu_name(), "nproc": os.cpu_count(),
        "mode": "quick" if q else "full", "budget_s": args.budget, "netc_git": git_state(),
    }
    print(f"torch {torch.__version__} (torchvision {torchvision.__version__}), onnxruntime {ort.__version__}, "
          f"onnx {onnx.__version__}, numpy {np.__version__}; {env['cpu']}, {os.cpu_count()} CPUs")
    if UNSET_ENV:
        print(f"unset for the Python process (kept for netc): {', '.join(UNSET_ENV)}")
    pinfo = torch.__config__.parallel_info()
    keep = [ln.strip() for ln in pinfo.splitlines()
            if any(s in ln for s in ("get_num_threads", "get_num_interop", "OpenMP", "oneAPI", "MKL-DNN", "backend"))]
    env["torch_parallel_info"] = pinfo
    print("torch parallel_info: " + "; ".join(keep))
    g = env["netc_git"]
    print(f"netc at {(g['commit'] or '?')[:10]}" + (f" + uncommitted changes in {len(g['modified'])} files" if g["modified"] else ""))
    print(f"ORT providers: {ort.get_available_providers()}; load average {loadavg()}\n", flush=True)

    t0 = time.time()
    results = []
    tc = None

    def save():  # after every configuration, so an interrupted run keeps what it measured
        env["wall_s"] = time.time() - t0
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({"env": env, "results": results, "torch_compile": tc}, fh, indent=2)

    for name, batch, shape, _ in cfgs:
        results.append(run_config(args, name, batch, shape, work))
        save()
    if args.torch_compile:
        tc = torch_compile_cmp(args, work)
        save()
    print()
    print(f"### netc vs PyTorch {torch.__version__} vs ONNX Runtime {ort.__version__} — {THREADS} threads, "
          f"images/s median (min–max), {env['cpu']}")
    print()
    print(table(results))
    if tc:
        print()
        print(f"resnet18 b16 compile: torch.compile first call {tc['torch_compile_first_call_s']:.1f} s "
              f"(then {tc['torch_compile_images_per_s']:.1f} img/s); netc front end {tc['netc_frontend_ms']:.1f} ms "
              f"+ compile {tc['netc_compile_ms']:.1f} ms")
    print(f"\nwall time {env['wall_s']:.0f} s; JSON: {os.path.relpath(args.out, ROOT)}")
    bad = [f"{r['model']} b{r['batch']}" for r in results if not r.get("correct")]
    if bad:
        print(f"netc disagreed with PyTorch on: {', '.join(bad)} (see netc_run_cmd in the JSON)")


def git_state():
    """The commit netc was built from, and the files changed since (the binary includes them)."""
    def git(*a):
        p = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None
    return {"commit": git("rev-parse", "HEAD"),
            "modified": (git("status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml", "Cargo.lock") or "").splitlines(),
            "binary_mtime": time.ctime(os.path.getmtime(os.path.join(ROOT, "target", "release", "netc")))}


def cpu_name():
    try:
        for ln in open("/proc/cpuinfo"):
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
