"""ONNX Runtime's own per-node times for a torchvision model, to see where netc is behind.

    target/compare-venv/bin/python benches/compare/ort_profile.py resnet50 16 [--runs 8]

Exports the model (random weights, opset 17, as compare.py does), runs it with ORT's profiler
(2 threads, ORT_ENABLE_ALL, sequential, like compare.py) after 3 warm-up runs, and prints the
nodes by time per run. Node names after ORT's fusions: in a ResNet bottleneck,
`.../relu_1/Relu_output_0_nchwc` is the 3x3 (conv2), `.../relu/...` the first 1x1, and
`.../conv3/...` the expanding 1x1 with the residual add fused. Compare with
`netc bench specs/<model>.net --batch N --profile`.
"""
import argparse
import collections
import json
import os
import tempfile
import time

import onnxruntime as ort
import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("batch", type=int)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    kw = {"aux_logits": False, "init_weights": False} if args.model == "googlenet" else {}
    m = getattr(torchvision.models, args.model)(weights=None, **kw).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    work = tempfile.mkdtemp(prefix="ort-profile-")
    path = os.path.join(work, f"{args.model}.onnx")
    torch.onnx.export(m, (x,), path, opset_version=17, input_names=["input"], dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(work, "profile")
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {"input": x.numpy()}
    for _ in range(3):
        s.run(None, feed)
    t = time.perf_counter()
    for _ in range(args.runs):
        s.run(None, feed)
    wall = (time.perf_counter() - t) / args.runs * 1000
    events = json.load(open(s.end_profiling()))
    # Skip the warm-up runs: keep the last `runs` model_run events' time window.
    runs = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    start_us = runs[-args.runs] if len(runs) >= args.runs else 0
    agg, op = collections.Counter(), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start_us:
            n = e["name"][: -len("_kernel_time")]
            agg[n] += e["dur"]
            op[n] = e["args"].get("op_name", "")
    total = sum(agg.values())
    print(f"{args.model} batch {args.batch}: {wall:.2f} ms per run (wall), "
          f"{total / args.runs / 1000:.2f} ms in nodes")
    for n, d in agg.most_common(args.top):
        print(f"{d / args.runs / 1000:8.2f} ms {100 * d / total:5.1f}%  {op[n]:14s} {n}")


if __name__ == "__main__":
    main()
