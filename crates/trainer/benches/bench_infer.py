"""Inference speed side by side: our CPU kernels (`trainer bench-infer`), PyTorch eager,
`torch.compile` and onnxruntime on the exported file, for the same checkpoints, in one sitting.

Run from the repository root, after `cargo build --release -p trainer`:

    python crates/trainer/benches/bench_infer.py --checkpoint runs/latest/teacher/best.safetensors \
        --checkpoint runs/latest/student_distilled/best.safetensors --rounds 4 --threads 2

Needs torch, torchvision, onnxruntime, safetensors, numpy. Every round runs each backend in a
fresh process, one after the other (ours, PyTorch eager, torch.compile, onnxruntime), so that
the machine's noise falls on all of them alike; the table gives the median over the rounds of
each backend's figures, and the ratios of ours to each (> 1: ours is faster). Each figure, in
every backend, is the protocol of `trainer::infer`: 3 warm-up passes, then the median of
`--samples` timed passes at batch 1 (latency per image) and of max(samples / 6, 3) passes at
batch 64 (images per second), each cut at 20 s; random normalised images, evaluation mode, no
gradient; every backend on `--image-size`² images (32). Writes target/bench/infer.md and
target/bench/infer.json.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
BACKENDS = ["ours", "torch-eager", "torch-compile", "onnxruntime"]


def checkpoint_info(path):
    """(arch, stem, classes, state dict in f32) of one of our checkpoints."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k) for k in f.keys()}
    arch = meta.get("arch")
    if arch is None:
        sys.exit(f"{path}: no `arch` metadata")
    stem = "imagenet" if sd["conv1.weight"].shape[-1] == 7 else "cifar"
    classes = sd["fc.weight"].shape[0]
    sd = {k: v.float() for k, v in sd.items() if not k.startswith(("projector.", "optimizer."))}
    return arch, stem, classes, sd


def torch_model(path):
    import torch

    spec = importlib.util.spec_from_file_location(
        "gen_models", os.path.join(ROOT, "crates", "models", "tests", "fixtures", "gen_models.py")
    )
    gm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gm)
    arch, stem, classes, sd = checkpoint_info(path)
    if arch in gm.REPDISTILLER:
        if stem != "cifar":
            sys.exit(f"{path}: no PyTorch definition of {arch} with the ImageNet stem")
        m = gm.repdistiller(arch, classes)
    else:
        m = gm.torchvision_resnet(arch, classes, stem)
    m.load_state_dict(sd, strict=True)
    return m.eval()


def sample(warmup, samples, max_seconds, f):
    for _ in range(warmup):
        f()
    times, start = [], time.perf_counter()
    while len(times) < max(samples, 1):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
        if len(times) >= 3 and time.perf_counter() - start > max_seconds:
            break
    return times


def measure(run, size, samples):
    """The two figures of `run(batch)` (a callable running one batch of that size)."""
    import numpy as np

    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    many = rng.standard_normal((64, 3, size, size), dtype=np.float32)
    t1 = sample(3, samples, 20.0, lambda: run(one))
    tb = sample(3, max(samples // 6, 3), 20.0, lambda: run(many))
    return {
        "ms_per_image": 1e3 * statistics.median(t1),
        "images_per_second": 64 / statistics.median(tb),
    }


def worker(backend, checkpoints, onnx_files, threads, samples, size):
    """One backend, every checkpoint, in this process; prints one JSON line per model."""
    if backend.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        for path in checkpoints:
            m = torch_model(path)
            if backend == "torch-compile":
                m = torch.compile(m)

            def run(x, m=m):
                with torch.inference_mode():
                    m(torch.from_numpy(x))

            fig = measure(run, size, samples)
            print(json.dumps({"backend": backend, "checkpoint": path, **fig}), flush=True)
    elif backend == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for path, onnx_path in zip(checkpoints, onnx_files):
            sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
            fig = measure(lambda x: sess.run(None, {"input": x}), size, samples)
            print(json.dumps({"backend": backend, "checkpoint": path, **fig}), flush=True)
    else:
        sys.exit(f"unknown backend {backend}")


def run_worker(args, backend, onnx_files):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", backend,
           "--threads", str(args.threads), "--samples", str(args.samples),
           "--image-size", str(args.image_size)]
    for c in args.checkpoint:
        cmd += ["--checkpoint", c]
    for o in onnx_files:
        cmd += ["--onnx", o]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"{backend} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
        return None
    return {j["checkpoint"]: j for j in map(json.loads, r.stdout.strip().splitlines())}


def run_ours(args):
    cmd = [args.trainer, "bench-infer", "--json", "--threads", str(args.threads),
           "--samples", str(args.samples), "--image-size", str(args.image_size)]
    for c in args.checkpoint:
        cmd += ["--checkpoint", c]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    report = json.loads(r.stdout)
    out = {}
    for row, path in zip(report["models"], args.checkpoint):
        t = row["figures"]["timing"]
        out[path] = {"ms_per_image": t["ms_per_image"], "images_per_second": t["images_per_second"]}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", required=True)
    p.add_argument("--onnx", action="append", default=[])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--trainer", default=os.path.join(ROOT, "target", "release", "trainer"))
    p.add_argument("--worker", choices=BACKENDS[1:])
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.checkpoint, args.onnx, args.threads, args.samples, args.image_size)
        return

    out_dir = os.path.join(ROOT, "target", "bench")
    os.makedirs(out_dir, exist_ok=True)
    onnx_files = []
    for i, c in enumerate(args.checkpoint):
        o = os.path.join(out_dir, f"infer_{i}.onnx")
        subprocess.run([args.trainer, "export", "--checkpoint", c, "--onnx", o,
                        "--image-size", str(args.image_size)], check=True, capture_output=True)
        onnx_files.append(o)

    rounds = {b: [] for b in BACKENDS}
    for r in range(args.rounds):
        for b in BACKENDS:
            res = run_ours(args) if b == "ours" else run_worker(args, b, onnx_files)
            if res is not None:
                rounds[b].append(res)
                print(f"round {r + 1} {b}: " + ", ".join(
                    f"{os.path.basename(os.path.dirname(c)) or c} {v['ms_per_image']:.3f} ms, "
                    f"{v['images_per_second']:.0f} img/s" for c, v in res.items()), flush=True)

    def med(b, c, key):
        vals = [res[c][key] for res in rounds[b] if c in res]
        return statistics.median(vals) if vals else None

    import torch

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:
        pass
    lines = [
        f"`python crates/trainer/benches/bench_infer.py --rounds {args.rounds} --threads {args.threads} "
        f"--samples {args.samples} --image-size {args.image_size}` on {cpu}, {args.threads} threads; PyTorch {torch.__version__}, "
        f"onnxruntime {__import__('onnxruntime').__version__}. Medians over {args.rounds} alternating rounds; "
        "ratio > 1: ours is faster.",
        "",
        "| model | figure | ours | PyTorch eager | torch.compile | onnxruntime | ours / eager | ours / compile | ours / onnxruntime |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    table = []
    for c in args.checkpoint:
        arch = checkpoint_info(c)[0]
        name = f"{os.path.basename(os.path.dirname(c)) or c} ({arch})"
        for key, unit, better_low in [("ms_per_image", "ms/image, batch 1", True),
                                      ("images_per_second", "images/s, batch 64", False)]:
            vals = {b: med(b, c, key) for b in BACKENDS}
            fmt = (lambda v: "–" if v is None else f"{v:.3f}") if better_low else \
                  (lambda v: "–" if v is None else f"{v:.0f}")

            def ratio(other):
                o, u = vals[other], vals["ours"]
                if o is None or u is None:
                    return "–"
                return f"{(o / u if better_low else u / o):.2f}×"

            lines.append(f"| {name} | {unit} | {fmt(vals['ours'])} | {fmt(vals['torch-eager'])} | "
                         f"{fmt(vals['torch-compile'])} | {fmt(vals['onnxruntime'])} | {ratio('torch-eager')} | "
                         f"{ratio('torch-compile')} | {ratio('onnxruntime')} |")
            table.append({"checkpoint": c, "arch": arch, "figure": key, **vals})
    md = "\n".join(lines) + "\n"
    print("\n" + md)
    with open(os.path.join(out_dir, "infer.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out_dir, "infer.json"), "w") as f:
        json.dump({"rounds": rounds, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
