#!/usr/bin/env python
"""Training-step speed on a GPU: mgrt against PyTorch eager and the cuBLAS floor, one run.

    python bench/bench_gpu.py [--quick] [--only NAME] [--out DIR] [--steps N]

The graphs are the TensorFlow-written MetaGraphs cached in bench/models/ (written by
bench/bench_run.py), imported by mgrt with no device fields: the placer puts every node it has
a GPU kernel for on ``GPU:0`` (TensorFlow's device priorities). Benchmarks:

- ``mlp_large_train_b256`` / ``mlp_large_train_b4096``: 784-1024-1024-10 MLP, ReLU, sparse
  softmax cross-entropy, SGD, at batch 256 and 4096; with the cuBLAS floor (the 8 forward and
  backward GEMMs of the step, same shapes and transposes, through CuPy alone) and the GFLOP/s;
- ``mlp_small_train``: 784-256-10 MLP, batch 64;
- ``cnn_small_train``: the small CNN of bench_run.py, batch 32.

PyTorch eager runs the same model (same initial values, taken from mgrt's session, the same
batch): ``nn.functional`` ops and a hand-written SGD/Momentum update, so that both do the
same arithmetic. Before timing, both runtimes' first-step losses must agree (rtol 1e-3, float32
on different kernels), and mgrt's must agree with TensorFlow's recorded loss where the batch is
the recorded one. Each timed step ends with the loss on the host (mgrt: the fetch; PyTorch:
``loss.item()``), so both include one device-to-host copy and a sync per step; mgrt's step
also puts the fed batch on the GPU, as a TF1 feed does (PyTorch gets a host batch copied with
``.to(device)`` each step likewise).

Ratios: mgrt steps/s / PyTorch steps/s, and cuBLAS-floor time / mgrt step time. The goals of
issue 5: at or above PyTorch eager on the large MLP, at least 0.8 of the GEMM floor at batch
4096. Results: ``<out>/gpu_<device>_<date>.json`` and ``<out>/gpu_latest.md``.

Without a real GPU the script refuses, unless ``--simulated`` (then MGRT_SIMULATED_GPUS=1 and
tiny step counts: a smoke test of the script and of the GPU code path, no figures).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

BENCHES = {
    "mlp_large_train_b256": {"graph": "mlp_large", "batch": 256, "x": [784], "opt": ("sgd", 0.01),
                             "gemm_floor": [784, 1024, 1024, 10], "tf_check": "mlp_large_train"},
    "mlp_large_train_b4096": {"graph": "mlp_large", "batch": 4096, "x": [784],
                              "opt": ("sgd", 0.01), "gemm_floor": [784, 1024, 1024, 10]},
    "mlp_small_train": {"graph": "mlp_small", "batch": 64, "x": [784], "opt": ("sgd", 0.05),
                        "tf_check": "mlp_small_train"},
    "cnn_small_train": {"graph": "cnn_small", "batch": 32, "x": [28, 28, 1],
                        "opt": ("momentum", 0.01, 0.9), "tf_check": "cnn_small_train"},
}


def make_batch(spec, seed=0):
    """bench_run.py's batch (the same generator, so TF's recorded losses apply)."""
    rng = np.random.default_rng(seed)
    b = spec["batch"]
    return {"x": rng.random([b] + spec["x"], dtype=np.float32),
            "y": rng.integers(0, 10, size=[b]).astype(np.int32)}


# --- mgrt --------------------------------------------------------------------------------------
class MgrtRunner:
    def __init__(self, meta_path, batch):
        import mgrt.compat.v1 as tf

        self.tf = tf
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.train.import_meta_graph(meta_path)
            self.sess = tf.Session(graph=self.graph)
            self.sess.run(tf.global_variables_initializer())
            self.variables = tf.global_variables()
            self.init_values = self.sess.run({v.op.name: v for v in self.variables})
        el = self.graph.as_graph_element
        self.fetches = [el("train"), el("loss:0")]
        self.feeds = [el("x:0"), el("y:0")]
        self.call = self.sess.make_callable(self.fetches, feed_list=self.feeds)
        self.batch = batch
        p = self.sess.placement()
        ops = self.graph.get_operations()
        self.on_gpu = sum(1 for op in ops if p.device_of(op).device_type == "GPU")
        self.n_ops = len(ops)
        self.cpu_ops = sorted({op.type for op in ops if p.device_of(op).device_type != "GPU"})

    def reset(self):
        for v in self.variables:
            self.sess.run(v.initializer, {v.initial_value: self.init_values[v.op.name]})

    def step(self):
        return self.call(self.batch["x"], self.batch["y"])[1]

    def losses(self):
        self.reset()
        l1 = float(self.step())
        l2 = float(self.sess.run(self.fetches[1], dict(zip(self.feeds, [self.batch["x"],
                                                                          self.batch["y"]]))))
        self.reset()
        return [l1, l2]


# --- PyTorch eager ------------------------------------------------------------------------------
class TorchRunner:
    """The same model in PyTorch eager, from mgrt's initial values (TF layouts converted)."""

    def __init__(self, graph, init_values, batch, opt):
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        self.dev = torch.device("cuda")
        self.graph = graph
        self.opt = opt
        self.init = {k: np.asarray(v) for k, v in init_values.items()}
        self.batch = batch
        names = sorted(k for k in self.init if self.init[k].dtype == np.float32
                       and self.init[k].ndim >= 1 and "Momentum" not in k)
        self.names = names
        self.reset()

    def reset(self):
        torch = self.torch
        self.params = {k: torch.tensor(self.init[k], device=self.dev, requires_grad=True)
                       for k in self.names}
        self.slots = {k: torch.zeros_like(p) for k, p in self.params.items()}

    def _layers(self):
        """(weight, bias) pairs in graph order: kernels are the >=2-D variables."""
        ws = [k for k in self.names if self.init[k].ndim >= 2]
        pairs = []
        for w in ws:
            prefix = w.rsplit("/", 1)[0]
            b = next(k for k in self.names if self.init[k].ndim == 1 and
                     k.rsplit("/", 1)[0] == prefix)
            pairs.append((w, b))
        return pairs

    def forward(self, x):
        F, torch = self.F, self.torch
        pairs = self._layers()
        h = x
        if self.graph == "cnn_small":
            convs = [p for p in pairs if self.init[p[0]].ndim == 4]
            dense = [p for p in pairs if self.init[p[0]].ndim == 2]
            h = h.permute(0, 3, 1, 2)
            for w, b in convs:  # TF HWIO -> torch OIHW, SAME padding for 5x5
                k = self.params[w].permute(3, 2, 0, 1)
                h = F.max_pool2d(F.relu(F.conv2d(h, k, self.params[b], padding=2)), 2)
            h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
            pairs = dense
        for i, (w, b) in enumerate(pairs):
            h = h @ self.params[w] + self.params[b]
            if i < len(pairs) - 1:
                h = F.relu(h)
        return h

    def step(self):
        torch, F = self.torch, self.F
        x = torch.from_numpy(self.batch["x"]).to(self.dev, non_blocking=False)
        y = torch.from_numpy(self.batch["y"]).to(self.dev).long()
        for p in self.params.values():
            p.grad = None
        loss = F.cross_entropy(self.forward(x), y)
        loss.backward()
        with torch.no_grad():
            if self.opt[0] == "sgd":
                for p in self.params.values():
                    p.sub_(p.grad, alpha=self.opt[1])
            else:  # TF Momentum: accum = accum * m + g; var -= lr * accum
                lr, m = self.opt[1], self.opt[2]
                for k, p in self.params.items():
                    a = self.slots[k]
                    a.mul_(m).add_(p.grad)
                    p.sub_(a, alpha=lr)
        return loss.item()


# --- cuBLAS floor -------------------------------------------------------------------------------
def cublas_floor(sizes, batch):
    import cupy as cp

    rng = np.random.default_rng(0)
    acts = [cp.asarray(rng.random((batch, n), dtype=np.float32)) for n in sizes]
    ws = [cp.asarray(rng.random((sizes[i], sizes[i + 1]), dtype=np.float32))
          for i in range(len(sizes) - 1)]
    grads = [cp.asarray(rng.random((batch, n), dtype=np.float32)) for n in sizes[1:]]
    calls, flops = [], 0
    for i, w in enumerate(ws):
        calls.append((acts[i], w))
        flops += 2 * batch * w.shape[0] * w.shape[1]
    for i in reversed(range(len(ws))):
        calls.append((acts[i].T, grads[i]))
        flops += 2 * batch * ws[i].shape[0] * ws[i].shape[1]
        if i > 0:
            calls.append((grads[i], ws[i].T))
            flops += 2 * batch * ws[i].shape[0] * ws[i].shape[1]

    def fn():
        for a, b in calls:
            cp.matmul(a, b)
        cp.cuda.get_current_stream().synchronize()

    return fn, flops


def time_fn(fn, steps, repeats, warmup=5):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        out.append((time.perf_counter() - t0) / steps * 1e3)
    return {"median_ms": statistics.median(out), "min_ms": min(out), "runs_ms": out}


def device_name():
    try:
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(0)
        n = props["name"]
        return n.decode() if isinstance(n, bytes) else str(n)
    except Exception:  # noqa: BLE001
        return "simulated GPU"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", help="run only these benchmarks")
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--simulated", action="store_true",
                    help="no real GPU: one simulated GPU, tiny counts (a smoke test)")
    args = ap.parse_args(argv)
    if args.simulated:
        os.environ["MGRT_SIMULATED_GPUS"] = "1"
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    from mgrt.devices import gpu_status, list_devices

    gpus = [d for d in list_devices() if d.device_type == "GPU"]
    if not gpus:
        sys.exit(f"bench_gpu.py needs a GPU: {gpu_status()} (--simulated for a smoke test)")
    real = not getattr(gpus[0], "is_simulated", False)
    steps = args.steps or (2 if not real else (20 if args.quick else 100))
    repeats = args.repeats or (1 if not real else (3 if args.quick else 7))
    try:
        import torch

        have_torch = real and torch.cuda.is_available()
    except ImportError:
        have_torch = False
    index = json.load(open(os.path.join(HERE, "models", "INDEX.json")))
    tf_check = index.get("tf_check_values", {})
    results = {"device": device_name() if real else "simulated GPU", "date":
               datetime.date.today().isoformat(), "host": platform.node(), "steps": steps,
               "repeats": repeats, "benches": {}}
    names = args.only or list(BENCHES)
    for name in names:
        spec = BENCHES[name]
        if not real and spec["batch"] > 256:
            continue
        batch = make_batch(spec)
        m = MgrtRunner(os.path.join(HERE, "models", spec["graph"] + ".meta"), batch)
        row = {"batch": spec["batch"], "nodes_on_gpu": m.on_gpu, "nodes": m.n_ops,
               "op_types_not_on_gpu": m.cpu_ops}
        row["mgrt_losses"] = m.losses()
        want = tf_check.get(spec.get("tf_check"))
        if want:
            np.testing.assert_allclose(row["mgrt_losses"], want, rtol=1e-3, err_msg=name)
            row["tf_losses"] = want
        row["mgrt"] = time_fn(m.step, steps, repeats)
        if have_torch:
            t = TorchRunner(spec["graph"], m.init_values, batch, spec["opt"])
            l1 = t.step()
            t.reset()
            np.testing.assert_allclose(l1, row["mgrt_losses"][0], rtol=1e-3, err_msg=name)
            row["torch_first_loss"] = l1
            row["torch"] = time_fn(t.step, steps, repeats)
            row["ratio_vs_torch"] = row["torch"]["median_ms"] / row["mgrt"]["median_ms"]
        if real and spec.get("gemm_floor"):
            fn, flops = cublas_floor(spec["gemm_floor"], spec["batch"])
            fl = time_fn(fn, steps, repeats)
            row["cublas_floor"] = fl
            row["floor_gflops"] = flops / fl["median_ms"] / 1e6
            row["mgrt_gflops"] = flops / row["mgrt"]["median_ms"] / 1e6
            row["fraction_of_floor"] = fl["median_ms"] / row["mgrt"]["median_ms"]
        results["benches"][name] = row
        print(f"{name}: mgrt {row['mgrt']['median_ms']:.3f} ms"
              + (f", torch {row['torch']['median_ms']:.3f} ms, ratio "
                 f"{row['ratio_vs_torch']:.2f}" if "torch" in row else "")
              + (f", floor fraction {row['fraction_of_floor']:.2f}"
                 if "fraction_of_floor" in row else "")
              + f" ({m.on_gpu}/{m.n_ops} nodes on the GPU)", flush=True)
        m.sess.close()
    if real:
        os.makedirs(args.out, exist_ok=True)
        tag = results["device"].replace(" ", "_")
        with open(os.path.join(args.out, f"gpu_{tag}_{results['date']}.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, "gpu_latest.md"), "w") as f:
            f.write(markdown(results))
    return results


def markdown(r):
    lines = [f"# GPU training steps: mgrt vs PyTorch eager ({r['device']}, {r['date']})", "",
             f"{r['steps']} steps x {r['repeats']} repeats, medians; ratio = PyTorch ms / mgrt ms "
             "(>= 1: mgrt faster); floor = cuBLAS-only time of the step's GEMMs / mgrt time.", "",
             "| benchmark | batch | mgrt ms | PyTorch ms | ratio | floor ms | of floor | nodes on GPU |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, row in r["benches"].items():
        def ms(k):
            return f"{row[k]['median_ms']:.3f}" if k in row else "—"
        lines.append(f"| {name} | {row['batch']} | {ms('mgrt')} | {ms('torch')} | "
                     f"{row.get('ratio_vs_torch', float('nan')):.2f} | {ms('cublas_floor')} | "
                     f"{row.get('fraction_of_floor', float('nan')):.2f} | "
                     f"{row['nodes_on_gpu']}/{row['nodes']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
