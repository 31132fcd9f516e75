#!/usr/bin/env python
"""Graph-running speed: the same imported TF1 graphs run by mgrt and by TensorFlow, in one run.

    python bench/bench_run.py [--quick] [--only NAME] [--out DIR] [--profile]

The models are built with TensorFlow (``tf.compat.v1``, v2 behaviour off, ref variables),
exported as MetaGraphs to a temporary folder with their initial variable values, and
*imported* by both runtimes (``train.import_meta_graph`` into a fresh graph) — each then runs
the imported graph:

- ``mlp_small_train`` / ``mlp_small_infer``: 784-256-10 MLP (ReLU, sparse softmax
  cross-entropy, GradientDescent 0.05), batch 64; one training step (``[train, loss]``), and
  inference (``probs``, x fed) on the same graph;
- ``cnn_small_train``: 28x28x1 -> conv 5x5x16 + ReLU + maxpool 2 -> conv 5x5x32 + ReLU +
  maxpool 2 -> dense 10, Momentum 0.01/0.9, batch 32 (NHWC, SAME padding), with numpy's GEMM
  floor of its convolutions in im2col form;
- ``mlp_large_train``: 784-1024-1024-10 MLP, GradientDescent 0.01, batch 256, with numpy's
  GEMM floor (the 8 forward+backward matmuls of the step, same shapes and transposes, timed
  alone in numpy) and the GFLOP/s of each; ``mlp_large_adam_train``: the same with Adam
  (an extra row: the optimizer's elementwise cost);
- ``add_chain``: a [1] float32 placeholder through 1,000 successive ``tf.add`` with a const;
  time / 1000 = per-op dispatch overhead. TensorFlow's graph optimizer (grappler) folds the
  chain to a couple of nodes, so TensorFlow is timed twice: with its defaults, and with
  ``rewrite_options.disable_meta_optimizer`` (then it executes every Add); the number of nodes
  each executed comes from a FULL_TRACE's step stats;
- import time of each model's MetaGraph (``import_meta_graph`` into a fresh graph).

Both runtimes get the same initial values (each variable's initializer run with its
``initial_value`` fed) and the same numpy batch. Before timing, the loss of the first step and
the loss after one update must agree within rtol 1e-4 (inference: the outputs), so the two time
equivalent work; the variables are reset to their initial values (untimed) before every
measurement. Timed: ``sess.run(fetches, feed_dict)`` and a ``sess.make_callable(fetches,
feed_list)`` variant, a number of steps per measurement (calibrated to --target-s seconds),
after a warm-up; the systems alternate within each repeat (the order rotating every repeat,
an idle --settle-s gap before each measurement, and up to --wait-quiet seconds of waiting for
a quiet machine before each repeat), and the median of the repeats is reported, with the min
and the median of the measurements during which other processes were quiet. TensorFlow runs with its defaults
(oneDNN, grappler, intra/inter-op threads = cores) and its config is recorded; the machine's
load average and the CPU used by *other* processes during each model's timing are recorded.

Speed ratio = mgrt steps/s / TF steps/s (>= 1: mgrt is at least as fast). Results:
``<out>/run_<host>_<date>.json`` and ``<out>/run_latest.md``. ``--profile`` also writes
``<out>/run_profile.md`` (cProfile, and pyinstrument if installed, of mgrt on the small MLP
step and the Add chain, and a breakdown of one ``Session.run``).

Without TensorFlow (or with --no-tf) the MetaGraphs cached in bench/models/ (written by the
last run with TensorFlow) are run by mgrt only, its variables set by its own seeded
initializers (which give TensorFlow's values); ratios are blank, and the losses are checked
against the TensorFlow losses recorded in bench/models/INDEX.json.
"""

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(ROOT, "bench", "models")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _early_blas_threads(argv):
    """``--blas-threads N`` must act before numpy (and its OpenBLAS) is loaded."""
    for i, a in enumerate(argv):
        n = a.split("=", 1)[1] if a.startswith("--blas-threads=") else (
            argv[i + 1] if a == "--blas-threads" and i + 1 < len(argv) else None)
        if n is not None:
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = str(int(n))


if __name__ == "__main__":
    _early_blas_threads(sys.argv[1:])

import numpy as np  # noqa: E402

import mgrt.compat.v1 as mtf  # noqa: E402

RTOL = 1e-4
ADD_CHAIN_LEN = 1000


def load_tf(disabled):
    if disabled:
        return None
    try:
        import tensorflow as tf
    except ImportError:
        return None
    try:
        tf.get_logger().setLevel("ERROR")
    except Exception:
        pass
    tf.compat.v1.disable_v2_behavior()
    return tf


# --- the models (built with TensorFlow) -------------------------------------------------------
def _dense(tf, h, n_in, n_out, name, relu, seed):
    v1 = tf.compat.v1
    with v1.name_scope(name):
        w = v1.Variable(v1.truncated_normal([n_in, n_out], stddev=1.0 / np.sqrt(n_in), seed=seed),
                        name="weights", use_resource=False)
        b = v1.Variable(tf.zeros([n_out]), name="biases", use_resource=False)
        h = tf.nn.bias_add(tf.matmul(h, w), b)
        return tf.nn.relu(h) if relu else h


def _finish_classifier(tf, logits, opt):
    v1 = tf.compat.v1
    logits = tf.identity(logits, name="logits")
    tf.nn.softmax(logits, name="probs")
    y = v1.placeholder(tf.int32, [None], name="y")
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    loss = tf.reduce_mean(xent, name="loss")
    opt.minimize(loss, name="train")


def build_mlp(tf, sizes, optimizer):
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(1)
        x = v1.placeholder(tf.float32, [None, sizes[0]], name="x")
        h = x
        for i in range(len(sizes) - 1):
            h = _dense(tf, h, sizes[i], sizes[i + 1], f"layer{i}", i < len(sizes) - 2, seed=i + 1)
        _finish_classifier(tf, h, optimizer(v1))
    return g


def build_cnn(tf):
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(1)
        x = v1.placeholder(tf.float32, [None, 28, 28, 1], name="x")
        h = x
        c_in = 1
        for i, c_out in enumerate((16, 32)):
            with v1.name_scope(f"conv{i}"):
                w = v1.Variable(v1.truncated_normal([5, 5, c_in, c_out],
                                                    stddev=1.0 / np.sqrt(25 * c_in), seed=10 + i),
                                name="weights", use_resource=False)
                b = v1.Variable(tf.zeros([c_out]), name="biases", use_resource=False)
                h = tf.nn.relu(tf.nn.bias_add(
                    tf.nn.conv2d(h, w, strides=[1, 1, 1, 1], padding="SAME"), b))
                h = tf.nn.max_pool2d(h, ksize=2, strides=2, padding="SAME")
            c_in = c_out
        h = tf.reshape(h, [-1, 7 * 7 * 32])
        h = _dense(tf, h, 7 * 7 * 32, 10, "dense", False, seed=20)
        _finish_classifier(tf, h, v1.train.MomentumOptimizer(0.01, 0.9))
    return g


def build_add_chain(tf):
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [1], name="x")
        c = tf.constant([1.0], dtype=tf.float32, name="c")
        y = x
        for i in range(ADD_CHAIN_LEN):
            y = tf.add(y, c, name="out" if i == ADD_CHAIN_LEN - 1 else None)
    return g


# Graph files: name -> (builder, description)
GRAPHS = {
    "mlp_small": (lambda tf: build_mlp(tf, [784, 256, 10],
                                       lambda v1: v1.train.GradientDescentOptimizer(0.05)),
                  "MLP 784-256-10, ReLU, sparse softmax xent, GradientDescent(0.05)"),
    "cnn_small": (build_cnn, "CNN 28x28x1: conv5x5x16+ReLU+maxpool2, conv5x5x32+ReLU+maxpool2, "
                             "dense 10; Momentum(0.01, 0.9)"),
    "mlp_large": (lambda tf: build_mlp(tf, [784, 1024, 1024, 10],
                                       lambda v1: v1.train.GradientDescentOptimizer(0.01)),
                  "MLP 784-1024-1024-10, ReLU, sparse softmax xent, GradientDescent(0.01)"),
    "mlp_large_adam": (lambda tf: build_mlp(tf, [784, 1024, 1024, 10],
                                            lambda v1: v1.train.AdamOptimizer(1e-3)),
                       "MLP 784-1024-1024-10, ReLU, sparse softmax xent, Adam(1e-3)"),
    "add_chain": (build_add_chain, f"[1] float32 placeholder + {ADD_CHAIN_LEN} chained AddV2 "
                                   "with one Const"),
}

# Benchmarks: name -> spec. kind: train (fetch [train, loss], feed x, y), infer (fetch probs,
# feed x), chain (fetch out, feed x).
BENCHES = {
    "mlp_small_train": {"graph": "mlp_small", "kind": "train", "batch": 64, "x": [784],
                        "goal": 1.0},
    "mlp_small_infer": {"graph": "mlp_small", "kind": "infer", "batch": 64, "x": [784],
                        "goal": 1.0},
    "cnn_small_train": {"graph": "cnn_small", "kind": "train", "batch": 32, "x": [28, 28, 1],
                        "goal": 1.0,
                        # (H, W, C in, C out, k, input gradient needed) per conv layer, dense
                        "conv_floor": {"convs": [(28, 28, 1, 16, 5, False),
                                                 (14, 14, 16, 32, 5, True)],
                                       "dense": [7 * 7 * 32, 10]}},
    "mlp_large_train": {"graph": "mlp_large", "kind": "train", "batch": 256, "x": [784],
                        "goal": 0.9, "gemm_floor": [784, 1024, 1024, 10]},
    "mlp_large_adam_train": {"graph": "mlp_large_adam", "kind": "train", "batch": 256,
                             "x": [784], "goal": None, "gemm_floor": [784, 1024, 1024, 10]},
    "add_chain": {"graph": "add_chain", "kind": "chain", "x": [1], "goal": None},
}


def make_batch(spec, seed=0):
    rng = np.random.default_rng(seed)
    if spec["kind"] == "chain":
        return {"x": np.ones([1], np.float32)}
    b = spec["batch"]
    return {"x": rng.random([b] + spec["x"], dtype=np.float32),
            "y": rng.integers(0, 10, size=[b]).astype(np.int32)}


def export_graphs(tf, names, folder):
    """Build the graphs with TF, export each MetaGraph to ``folder`` with its initial values
    (npz). Returns {name: (meta path, npz path)}."""
    v1 = tf.compat.v1
    out = {}
    for name in names:
        g = GRAPHS[name][0](tf)
        path = os.path.join(folder, name + ".meta")
        npz = os.path.join(folder, name + ".init.npz")
        with g.as_default():
            v1.train.export_meta_graph(filename=path, graph=g)
            variables = v1.global_variables()
            with v1.Session(graph=g) as s:
                s.run(v1.global_variables_initializer())
                values = s.run({v.op.name: v for v in variables}) if variables else {}
        np.savez(npz, **values)
        out[name] = (path, npz)
    return out


def update_model_cache(exported, tf_losses):
    """Keep a copy of the exported MetaGraphs (small: no variable values) and TF's losses in
    bench/models/ for runs without TensorFlow; a file is rewritten only if its bytes changed."""
    os.makedirs(MODELS_DIR, exist_ok=True)
    for name, (path, _) in exported.items():
        dst = os.path.join(MODELS_DIR, name + ".meta")
        with open(path, "rb") as f:
            new = f.read()
        old = None
        if os.path.exists(dst):
            with open(dst, "rb") as f:
                old = f.read()
        if old != new:
            with open(dst, "wb") as f:
                f.write(new)
    index_path = os.path.join(MODELS_DIR, "INDEX.json")
    index = {}
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    index.setdefault("graphs", {})
    for name in exported:
        index["graphs"][name] = GRAPHS[name][1]
    index.setdefault("tf_check_values", {}).update(tf_losses)
    index["note"] = ("Written by bench/bench_run.py from the graphs it builds with TensorFlow; "
                     "used by runs without TensorFlow. tf_check_values: the first-step loss and "
                     "the loss after one update (train), or the sum of the outputs (infer, "
                     "chain), TensorFlow got from its seeded initial values and the "
                     "benchmark's batch.")
    text = json.dumps(index, indent=1, sort_keys=True) + "\n"
    old = None
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as f:
            old = f.read()
    if old != text:
        with open(index_path, "w", encoding="utf-8") as f:
            f.write(text)


# --- one runtime running one imported graph -----------------------------------------------------
class Runner:
    """``mod`` is ``tf.compat.v1`` or ``mgrt.compat.v1``: the same code drives both."""

    def __init__(self, label, mod, meta_path, init_values=None, config=None):
        self.label = label
        self.mod = mod
        self.graph = mod.Graph()
        with self.graph.as_default():
            mod.train.import_meta_graph(meta_path)
            self.sess = mod.Session(graph=self.graph, config=config)
            self.variables = mod.global_variables()
            if init_values is None and self.variables:
                # the graph's own (seeded) initializers; their values are kept for reset()
                self.sess.run(mod.global_variables_initializer())
                init_values = self.sess.run({v.op.name: v for v in self.variables})
            self.init_values = init_values
            self.reset()

    def reset(self):
        """Every variable back to its initial value (feeding each initializer's
        ``initial_value``), so that every measurement trains from the same state."""
        for v in self.variables:
            self.sess.run(v.initializer, {v.initial_value: self.init_values[v.op.name]})

    def el(self, name):
        return self.graph.as_graph_element(name)

    def setup(self, spec, batch):
        kind = spec["kind"]
        x = self.el("x:0")
        if kind == "train":
            self.fetches = [self.el("train"), self.el("loss:0")]
            self.feeds = [x, self.el("y:0")]
            self.feed_values = [batch["x"], batch["y"]]
        elif kind == "infer":
            self.fetches = self.el("probs:0")
            self.feeds = [x]
            self.feed_values = [batch["x"]]
        else:
            self.fetches = self.el("out:0")
            self.feeds = [x]
            self.feed_values = [batch["x"]]
        self.feed_dict = dict(zip(self.feeds, self.feed_values))
        self.loss = self.el("loss:0") if kind == "train" else None

    def check_values(self, kind):
        """train: (first-step loss, loss after that update); else the output."""
        if kind == "train":
            _, l1 = self.sess.run(self.fetches, self.feed_dict)
            l2 = self.sess.run(self.loss, self.feed_dict)
            return [float(l1), float(l2)]
        return np.asarray(self.sess.run(self.fetches, self.feed_dict))

    def step_fn(self, variant):
        sess, fetches = self.sess, self.fetches
        if variant == "run":
            feed = self.feed_dict

            def step():
                sess.run(fetches, feed)
        else:
            call = sess.make_callable(fetches, feed_list=self.feeds)
            vals = self.feed_values

            def step():
                call(*vals)
        return step

    def executed_nodes(self, tf):
        """TF only: how many nodes one step executes (FULL_TRACE step stats, less _SOURCE,
        _arg and _retval)."""
        v1 = tf.compat.v1
        md = v1.RunMetadata()
        self.sess.run(self.fetches, self.feed_dict,
                      options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE),
                      run_metadata=md)
        types = {}
        for d in md.step_stats.dev_stats:
            for ns in d.node_stats:
                if ns.node_name == "_SOURCE" or ns.node_name.startswith(("_arg_", "_retval_")):
                    continue
                label = ns.timeline_label.split(" = ", 1)[-1]
                t = label.split("(", 1)[0].strip() or "?"
                types[t] = types.get(t, 0) + 1
        self.executed_types = dict(sorted(types.items(), key=lambda kv: (-kv[1], kv[0])))
        return sum(types.values())

    def close(self):
        try:
            self.sess.close()
        except Exception:
            pass


def mgrt_step_plan(runner):
    """(plan, feed values) that one ``sess.run(fetches, feed_dict)`` of the runner executes,
    caught by wrapping the Session's cached plans' ``run`` for one call (internal API)."""
    sess = runner.sess
    sess.run(runner.fetches, runner.feed_dict)  # the plan exists
    called = []
    plans = list(sess._plans.values())
    for p in plans:
        orig = p.run
        p.run = (lambda feed_values, p=p, orig=orig:
                 (called.append((p, feed_values)), orig(feed_values))[1])
    try:
        sess.run(runner.fetches, runner.feed_dict)
    finally:
        for p in plans:
            del p.run
    return called[-1]


def mgrt_plan_types(runner):
    """(kernel steps, {op type: count of its nodes}) of the plan mgrt runs for the runner's
    fetches: a _Concurrent pair is two steps; a fused step is one step and counts its member
    nodes' types (internal; (None, None) where the Session's internals differ)."""
    try:
        plan, _ = mgrt_step_plan(runner)
        types, n_steps = {}, 0
        for st in plan.steps:
            pair = st.op.type == "_Concurrent"
            n_steps += len(st.op.members) if pair else 1
            ops = [st.op]
            while any(getattr(op, "members", None) for op in ops):
                ops = [m for op in ops for m in (getattr(op, "members", None) or [op])]
            for op in ops:
                types[op.type] = types.get(op.type, 0) + 1
        return n_steps, dict(sorted(types.items(), key=lambda kv: (-kv[1], kv[0])))
    except Exception:
        return None, None


# --- load of the machine ------------------------------------------------------------------------
def _cpu_jiffies():
    try:
        with open("/proc/stat", encoding="ascii") as f:
            parts = f.readline().split()[1:]
        vals = [int(v) for v in parts]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals[:8]) - idle
    except Exception:
        return None


def _self_jiffies():
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])  # utime + stime
    except Exception:
        return None


class LoadMeter:
    """The CPU used by other processes (in cores) while it runs, and the load average."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.busy0, self.self0 = _cpu_jiffies(), _self_jiffies()
        self.load0 = os.getloadavg()

    def stop(self):
        dt = time.perf_counter() - self.t0
        busy1, self1 = _cpu_jiffies(), _self_jiffies()
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        others = None
        if None not in (self.busy0, self.self0, busy1, self1) and dt > 0:
            others = max(0.0, ((busy1 - self.busy0) - (self1 - self.self0)) / hz / dt)
        return {"seconds": round(dt, 2), "other_processes_cpu_cores": None if others is None
                else round(others, 2), "loadavg_before": [round(x, 2) for x in self.load0],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


# --- timing --------------------------------------------------------------------------------------
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _others_cores(busy0, self0, busy1, self1, dt):
    if None in (busy0, self0, busy1, self1) or dt <= 0:
        return None
    return max(0.0, ((busy1 - busy0) - (self1 - self0)) / _HZ / dt)


def _measure(fn, n):
    """(wall s/step, process CPU s/step, CPU cores used by other processes meanwhile)."""
    gc.collect()
    b0, s0 = _cpu_jiffies(), _self_jiffies()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    others = _others_cores(b0, s0, _cpu_jiffies(), _self_jiffies(), dt)
    return dt / n, dc / n, others


def wait_quiet(max_wait_s, threshold=0.3, sample_s=0.5):
    """Wait (up to ``max_wait_s``) until other processes use less than ``threshold`` cores over
    ``sample_s``; returns the seconds waited."""
    if max_wait_s <= 0:
        return 0.0
    t0 = time.perf_counter()
    while True:
        b0, s0, w0 = _cpu_jiffies(), _self_jiffies(), time.perf_counter()
        time.sleep(sample_s)
        others = _others_cores(b0, s0, _cpu_jiffies(), _self_jiffies(),
                               time.perf_counter() - w0)
        waited = time.perf_counter() - t0
        if others is None or others < threshold or waited >= max_wait_s:
            return waited


def time_systems(fns, repeats, target_s, warmup=3, max_steps=5000, wait_s=0.0, settle_s=0.0,
                 resets=None):
    """``fns``: {system: step function}. Warm-up, a common step count per measurement
    calibrated so the slowest system takes about ``target_s``, then ``repeats`` rounds in which
    every system is measured once, the order rotating every round (each round first waits up
    to ``wait_s`` for the machine to be quiet). Returns ({system: [(wall s/step, cpu s/step,
    other processes' cores)]}, steps per measurement, seconds waited). ``settle_s``: an idle
    gap before every measurement, so that the worker threads of the system measured before
    (OpenBLAS spins up to ~0.1 s after a GEMM, TF's pool briefly) are asleep. ``resets``:
    {system: function} called (untimed) before each of its measurements."""
    resets = resets or {}
    names = list(fns)
    slowest = 0.0
    for name in names:
        for _ in range(warmup):
            fns[name]()
        t = _measure(fns[name], 1)[0]
        n = max(1, min(max_steps, int(0.02 / max(t, 1e-7))))
        t = _measure(fns[name], n)[0]
        slowest = max(slowest, t)
    steps = max(1, min(max_steps, int(round(target_s / max(slowest, 1e-7)))))
    out = {n: [] for n in names}
    waited = 0.0
    for r in range(repeats):
        waited += wait_quiet(wait_s)
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if name in resets:
                resets[name]()
            if settle_s:
                time.sleep(settle_s)
            out[name].append(_measure(fns[name], steps))
    return out, steps, waited


def summary(times):
    if not times:
        return None
    wall = [x[0] for x in times]
    cpu = [x[1] for x in times]
    others = [x[2] for x in times if x[2] is not None]
    med = statistics.median(wall)
    return {"median_ms": med * 1e3, "min_ms": min(wall) * 1e3,
            "steps_per_s": 1.0 / med if med > 0 else None,
            "cpu_median_ms": statistics.median(cpu) * 1e3,
            "wall_ms": [round(t * 1e3, 5) for t in wall],
            "cpu_ms": [round(t * 1e3, 5) for t in cpu],
            "other_processes_cores": [round(o, 2) for o in others],
            "other_processes_cores_median": round(statistics.median(others), 2)
            if others else None,
            "quiet_median_ms": _quiet_median(times)}


QUIET_CORES = 0.25  # a measurement is "quiet" when other processes used less than this


def _quiet_median(times, least=3):
    q = [x[0] for x in times if x[2] is not None and x[2] < QUIET_CORES]
    return statistics.median(q) * 1e3 if len(q) >= least else None


def speed_ratio(m, t, key="median_ms"):
    """mgrt steps/s over TF steps/s (= TF time / mgrt time); >= 1: mgrt at least as fast."""
    if not m or not t or not m.get(key) or not t.get(key):
        return None
    return t[key] / m[key]


# --- numpy GEMM floor of an MLP's step -------------------------------------------------------------
def gemm_floor_fn(sizes, batch):
    """The forward and backward matmuls of one training step of an MLP ``sizes`` with batch
    ``batch``, as TensorFlow's MatMul gradient writes them (dA = dC @ B^T, dB = A^T @ dC; no
    gradient for the input), in numpy, float32. Returns (fn, flops, the shapes)."""
    rng = np.random.default_rng(0)
    acts = [rng.random((batch, n), dtype=np.float32) for n in sizes]
    ws = [rng.random((sizes[i], sizes[i + 1]), dtype=np.float32) for i in range(len(sizes) - 1)]
    grads = [rng.random((batch, n), dtype=np.float32) for n in sizes[1:]]
    calls = []
    flops = 0
    for i, w in enumerate(ws):  # forward
        calls.append((acts[i], w))
        flops += 2 * batch * w.shape[0] * w.shape[1]
    for i in reversed(range(len(ws))):  # backward
        calls.append((acts[i].T, grads[i]))  # dW = A^T @ dC
        flops += 2 * batch * ws[i].shape[0] * ws[i].shape[1]
        if i > 0:
            calls.append((grads[i], ws[i].T))  # dA = dC @ W^T
            flops += 2 * batch * ws[i].shape[0] * ws[i].shape[1]
    matmul = np.matmul

    def fn():
        for a, b in calls:
            matmul(a, b)

    shapes = [f"{list(a.shape)}{'ᵀ' if not a.flags.c_contiguous else ''} @ "
              f"{list(b.shape)}{'ᵀ' if not b.flags.c_contiguous else ''}" for a, b in calls]
    return fn, flops, shapes


def conv_floor_fn(spec, batch):
    """The matmuls of one training step of a CNN in im2col form (stride 1, SAME), in numpy,
    float32, the patch matrices built beforehand (not timed): per conv layer the forward
    (pixels x k*k*C) @ (k*k*C x O), the filter gradient (k*k*C x pixels) @ (pixels x O) and,
    where the graph needs it, the input gradient (pixels x O) @ (O x k*k*C); then the dense
    layer's as ``gemm_floor_fn``. What numpy's BLAS needs for the convolutions' arithmetic
    alone, the best a numpy runtime can do. Returns (fn, flops, the shapes)."""
    rng = np.random.default_rng(0)
    calls = []
    flops = 0
    for h, w, c, o, k, input_grad in spec["convs"]:
        m, kk = batch * h * w, k * k * c
        cols = rng.random((m, kk), dtype=np.float32)
        f = rng.random((kk, o), dtype=np.float32)
        dy = rng.random((m, o), dtype=np.float32)
        calls += [(cols, f), (cols.T, dy)]
        flops += 2 * 2 * m * kk * o
        if input_grad:
            calls.append((dy, f.T))
            flops += 2 * m * kk * o
    d_in, d_out = spec["dense"]
    a = rng.random((batch, d_in), dtype=np.float32)
    wd = rng.random((d_in, d_out), dtype=np.float32)
    g = rng.random((batch, d_out), dtype=np.float32)
    calls += [(a, wd), (a.T, g), (g, wd.T)]
    flops += 3 * 2 * batch * d_in * d_out
    matmul = np.matmul

    def fn():
        for x, y in calls:
            matmul(x, y)

    shapes = [f"{list(x.shape)}{'ᵀ' if not x.flags.c_contiguous else ''} @ "
              f"{list(y.shape)}{'ᵀ' if not y.flags.c_contiguous else ''}" for x, y in calls]
    return fn, flops, shapes


def add_chain_numpy_fn():
    """The kernel floor of the Add chain: 1,000 np.add calls on [1] float32 arrays."""
    x = np.ones([1], np.float32)
    c = np.ones([1], np.float32)
    add = np.add

    def fn():
        y = x
        for _ in range(ADD_CHAIN_LEN):
            y = add(y, c)
        return y
    return fn


# --- import time -------------------------------------------------------------------------------
def time_imports(tf, paths, repeats, wait_s=0.0):
    rows = {}
    fns = {}
    for name, path in paths.items():
        def m_imp(path=path):
            g = mtf.Graph()
            with g.as_default():
                mtf.train.import_meta_graph(path)

        f = {"mgrt": m_imp}
        if tf is not None:
            def t_imp(path=path):
                g = tf.Graph()
                with g.as_default():
                    tf.compat.v1.train.import_meta_graph(path)
            f["tf"] = t_imp
        fns[name] = f
    for name, f in fns.items():
        res, steps, _ = time_systems(f, repeats, target_s=0.3, warmup=1, max_steps=200,
                                     wait_s=wait_s)
        g = mtf.Graph()
        with g.as_default():
            mtf.train.import_meta_graph(paths[name])
        m, t = summary(res["mgrt"]), summary(res.get("tf"))
        rows[name] = {"nodes": len(g.get_operations()), "size": os.path.getsize(paths[name]),
                      "steps": steps, "mgrt": m, "tf": t, "speed_ratio": speed_ratio(m, t)}
        print(f"  import {name:<16} {rows[name]['nodes']:>5} nodes  mgrt {m['median_ms']:.2f} ms"
              + (f"  TF {t['median_ms']:.2f} ms  speed ratio {rows[name]['speed_ratio']:.2f}"
                 if t else ""), flush=True)
    return rows


# --- machine / config ----------------------------------------------------------------------------
def _cpu_jit():
    """Whether mgrt's numba loops for CPU kernels are on (numba importable, MGRT_CPU_JIT not 0):
    without them mgrt takes its numpy paths, slower for pooling."""
    try:
        from mgrt.kernels_cpu import _jit
        return bool(_jit.enabled())
    except Exception:  # noqa: BLE001
        return None


def machine_info(tf):
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--"],
                               capture_output=True, timeout=10).returncode == 1
    except Exception:
        commit, dirty = None, None
    blas = None
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg.get("Build Dependencies", {}).get("blas", {})
        blas = f"{b.get('name')} {b.get('version')}".strip()
    except Exception:
        pass
    info = {
        "hostname": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
        "numpy": np.__version__, "numpy_blas": blas,
        "blas_threads_env": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS",
                                                         "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                             if k in os.environ},
        "mgrt_commit": commit, "mgrt_uncommitted_changes": dirty,
        "mgrt_cpu_jit": _cpu_jit(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "tensorflow": None,
    }
    if tf is not None:
        onednn = None
        try:
            from tensorflow.python.util import _pywrap_util_port
            onednn = bool(_pywrap_util_port.IsMklEnabled())
        except Exception:
            pass
        info["tensorflow"] = {
            "version": tf.__version__,
            "onednn_enabled": onednn,
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: default)"),
            "intra_op_parallelism_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_parallelism_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "threads_note": "0 = TensorFlow's default (the number of cores)",
            "session_config": "default ConfigProto (grappler on); add_chain also with "
                              "rewrite_options.disable_meta_optimizer=True",
        }
    return info


# --- one benchmark ---------------------------------------------------------------------------------
def run_bench(name, spec, tf, graph_files, init_values, tf_check, args):
    kind = spec["kind"]
    path = graph_files[spec["graph"]]
    batch = make_batch(spec)
    row = {"name": name, "graph": spec["graph"], "description": GRAPHS[spec["graph"]][1],
           "kind": kind, "batch": spec.get("batch"), "goal_speed_ratio": spec.get("goal")}
    runners = {"mgrt": Runner("mgrt", mtf, path, init_values)}
    if tf is not None:
        v1 = tf.compat.v1
        runners["tf"] = Runner("tf", v1, path, init_values)
        if kind == "chain":
            cfg = v1.ConfigProto()
            cfg.graph_options.rewrite_options.disable_meta_optimizer = True
            runners["tf_no_grappler"] = Runner("tf_no_grappler", v1, path, init_values, cfg)
    for r in runners.values():
        r.setup(spec, batch)

    # --- equivalence check
    check = {}
    for label, r in runners.items():
        check[label] = r.check_values(kind)
    ref_label = "tf" if "tf" in check else None
    ok = True
    detail = {}
    for label, v in check.items():
        detail[label] = v if kind == "train" else float(np.sum(v, dtype=np.float64))
    if ref_label:
        for label, v in check.items():
            if label == ref_label:
                continue
            good = np.allclose(v, check[ref_label], rtol=RTOL, atol=1e-6)
            ok = ok and bool(good)
        row["check_against"] = "TensorFlow, same initial values"
    elif tf_check and name in tf_check:
        want = tf_check[name]
        got = detail["mgrt"]
        ok = bool(np.allclose(got, want, rtol=RTOL, atol=1e-5))
        row["check_against"] = "TensorFlow's recorded values (bench/models/INDEX.json)"
        detail["tf_recorded"] = want
    else:
        ok = None
        row["check_against"] = None
    row["check"] = {"ok": ok, "values": detail, "rtol": RTOL}
    flag = {True: "ok", False: "MISMATCH", None: "unchecked"}[ok]
    print(f"{name}: check {flag} {detail}", flush=True)

    if "tf" in runners:
        try:
            row["tf_executed_nodes"] = runners["tf"].executed_nodes(tf)
            row["tf_executed_op_types"] = runners["tf"].executed_types
            if "tf_no_grappler" in runners:
                row["tf_no_grappler_executed_nodes"] = runners["tf_no_grappler"].executed_nodes(tf)
        except Exception as e:  # noqa: BLE001
            row["tf_executed_nodes"] = f"n/a ({e})"
    row["mgrt_plan_steps"], types = mgrt_plan_types(runners["mgrt"])
    row["mgrt_plan_op_types"] = types

    # --- timing
    meter = LoadMeter()
    row["variants"] = {}
    for variant in ("run", "callable"):
        fns = {label: r.step_fn(variant) for label, r in runners.items()}
        extra = {}
        if variant == "run" and (spec.get("gemm_floor") or spec.get("conv_floor")):
            if spec.get("gemm_floor"):
                f, flops, shapes = gemm_floor_fn(spec["gemm_floor"], spec["batch"])
            else:
                f, flops, shapes = conv_floor_fn(spec["conv_floor"], spec["batch"])
            fns["numpy_gemm"] = f
            extra = {"flops": flops, "shapes": shapes}
        if variant == "run" and kind == "chain":
            fns["numpy_add"] = add_chain_numpy_fn()
        resets = {label: r.reset for label, r in runners.items()}
        res, steps, waited = time_systems(fns, args.repeats, args.target_s,
                                          wait_s=args.wait_quiet, settle_s=args.settle_s,
                                          resets=resets)
        v = {"steps_per_measurement": steps, "repeats": args.repeats,
             "waited_for_quiet_s": round(waited, 1)}
        for label, times in res.items():
            v[label] = summary(times)
        m = v["mgrt"]
        v["speed_ratio"] = speed_ratio(m, v.get("tf"))
        v["speed_ratio_min"] = speed_ratio(m, v.get("tf"), "min_ms")
        v["speed_ratio_quiet"] = speed_ratio(m, v.get("tf"), "quiet_median_ms")
        if "tf_no_grappler" in v:
            v["speed_ratio_no_grappler"] = speed_ratio(m, v["tf_no_grappler"])
        if extra:
            fl = extra["flops"]
            v["gemm"] = {"flops_per_step": fl, "shapes": extra["shapes"]}
            for label in ("mgrt", "tf", "numpy_gemm"):
                if v.get(label):
                    v["gemm"][f"{label}_gflops"] = fl / (v[label]["median_ms"] * 1e-3) / 1e9
            v["gemm"]["mgrt_over_floor"] = m["median_ms"] / v["numpy_gemm"]["median_ms"]
            if v.get("tf"):
                v["gemm"]["tf_over_floor"] = v["tf"]["median_ms"] / v["numpy_gemm"]["median_ms"]
        if kind == "chain":
            for label in ("mgrt", "tf", "tf_no_grappler", "numpy_add"):
                if v.get(label):
                    v[label]["us_per_op"] = v[label]["median_ms"] * 1e3 / ADD_CHAIN_LEN
        row["variants"][variant] = v
        line = f"  {variant:<8} mgrt {m['median_ms']:.4f} ms/step"
        for label in res:
            if label != "mgrt":
                line += f"  {label} {v[label]['median_ms']:.4f}"
        if v["speed_ratio"] is not None:
            line += f"  speed ratio {v['speed_ratio']:.2f}"
        print(line + f"  ({steps} steps x {args.repeats})", flush=True)
    row["load"] = meter.stop()
    if kind == "train":
        try:
            row["final_loss"] = {label: float(r.sess.run(r.loss, r.feed_dict))
                                 for label, r in runners.items()}
        except Exception:
            pass
    for r in runners.values():
        r.close()
    return row


# --- report ----------------------------------------------------------------------------------------
def _f(x, fmt="{:.2f}"):
    return "—" if x is None else fmt.format(x)


def markdown(results):
    info = results["machine"]
    tfi = info["tensorflow"]
    lines = []
    tf_text = (f"TensorFlow {tfi['version']} (oneDNN {'on' if tfi['onednn_enabled'] else 'off'}, "
               f"intra/inter-op threads {tfi['intra_op_parallelism_threads']}/"
               f"{tfi['inter_op_parallelism_threads']} = default, grappler on)"
               if tfi else "TensorFlow absent (mgrt only)")
    lines.append(f"Run {results['date']} on {info['cpu']} ({info['cores']} cores), Python "
                 f"{info['python']}, numpy {info['numpy']} ({info['numpy_blas']}"
                 f"{', threads ' + str(info['blas_threads_env']) if info['blas_threads_env'] else ', default threads'}), {tf_text}; "
                 f"{results['repeats']} repeats, systems alternating, about "
                 f"{results['target_s']} s per measurement after a {results['settle_s']} s "
                 f"idle gap; load average at start "
                 f"{info['loadavg_at_start']}. mgrt's numba loops for CPU kernels "
                 f"{ {True: 'on', False: 'off (numba missing or MGRT_CPU_JIT=0)', None: 'unknown'}[info.get('mgrt_cpu_jit')] }"
                 f". mgrt commit {str(info['mgrt_commit'])[:10]}"
                 f"{' + uncommitted changes' if info['mgrt_uncommitted_changes'] else ''}.")
    lines.append("")
    lines.append("Speed ratio = mgrt steps/s ÷ TF steps/s (**≥ 1: mgrt at least as fast**), of "
                 "the medians; ms per step: median (min). Last column: CPU cores used by other "
                 "processes during the measurements (median), from /proc/stat — a loaded "
                 "machine slows mgrt's multi-threaded BLAS far more than TensorFlow. 'Ratio, "
                 f"quiet only': of the medians of the measurements during which other processes "
                 f"used < {QUIET_CORES} cores (— where either side has fewer than 3).")
    lines.append("")
    lines.append("| benchmark | check | variant | mgrt ms/step | TF ms/step | mgrt steps/s | "
                 "TF steps/s | speed ratio | ratio of mins | ratio, quiet only | goal | "
                 "other procs' cores (mgrt / TF) |")
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["benchmarks"]:
        ck = {True: "ok", False: "**MISMATCH**", None: "—"}[row["check"]["ok"]]
        for variant, v in row["variants"].items():
            m, t = v["mgrt"], v.get("tf")
            goal = row["goal_speed_ratio"]
            r = v["speed_ratio"]
            met = "" if goal is None or r is None else (" ✓" if r >= goal else " ✗")
            t_ms = "—" if not t else f"{t['median_ms']:.3f} ({t['min_ms']:.3f})"
            lines.append(
                f"| {row['name']} | {ck} | {variant} | {m['median_ms']:.3f} ({m['min_ms']:.3f}) "
                f"| {t_ms} "
                f"| {_f(m['steps_per_s'], '{:.1f}')} | {_f(t and t['steps_per_s'], '{:.1f}')} "
                f"| **{_f(r)}**{met} | {_f(v['speed_ratio_min'])} "
                f"| {_f(v.get('speed_ratio_quiet'))} | {'≥ ' + format(goal, '.1f') if goal else '—'} "
                f"| {_f(m['other_processes_cores_median'])} / "
                f"{_f(t and t['other_processes_cores_median'])} |")
    lines.append("")

    counted = [r for r in results["benchmarks"] if r.get("mgrt_plan_steps")]
    if counted:
        lines.append("Nodes one step executes: mgrt's plan (kernel steps) and TensorFlow's "
                     "(FULL_TRACE step stats, after grappler: fused MatMul+BiasAdd+ReLU and "
                     "Conv2D+BiasAdd+ReLU, pruned dead ends). Heavy op types: "
                     "MatMul / Conv2DBackpropInput (mgrt: the members of its fused steps; TF: "
                     "node types containing the name).")
        lines.append("")
        lines.append("| benchmark | mgrt steps | TF nodes | mgrt MatMul | TF MatMul (incl. fused) "
                     "| mgrt Conv2DBackpropInput | TF Conv2DBackpropInput |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for row in counted:
            mt = row.get("mgrt_plan_op_types") or {}
            tt = row.get("tf_executed_op_types") or {}

            def tf_count(word):
                return sum(c for k, c in tt.items() if word in k) if tt else None
            lines.append(f"| {row['name']} | {row['mgrt_plan_steps']} "
                         f"| {row.get('tf_executed_nodes', '—')} | {mt.get('MatMul', 0)} "
                         f"| {_f(tf_count('MatMul'), '{}')} "
                         f"| {mt.get('Conv2DBackpropInput', 0)} "
                         f"| {_f(tf_count('Conv2DBackpropInput'), '{}')} |")
        lines.append("")

    large = [r for r in results["benchmarks"] if r["variants"]["run"].get("gemm")]
    if large:
        lines.append("### numpy's GEMM floor")
        lines.append("")
        lines.append("The step's matmuls timed alone in numpy in the same alternation: for the "
                     "MLPs the 8 matmuls (3 forward, 5 backward: no gradient for the input) "
                     "with TensorFlow's shapes and transposes; for the CNN the convolutions in "
                     "im2col form (per layer forward and filter gradient, and the second "
                     "layer's input gradient: the first's is pruned, by TF and by mgrt) with "
                     "the patch matrices built beforehand, and the dense layer's 3 matmuls. "
                     "This is the arithmetic a numpy runtime cannot avoid; a step at 1.0x the "
                     "floor would spend nothing on anything else. GFLOP/s = matmul FLOPs of a "
                     "step / time per step. ms: median of all measurements [median of the "
                     "quiet ones].")
        lines.append("")
        lines.append("| benchmark | GFLOP per step | numpy GEMM ms | numpy GFLOP/s | mgrt ms | "
                     "mgrt GFLOP/s | TF ms | TF GFLOP/s | mgrt / floor | TF / floor |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in large:
            v = row["variants"]["run"]
            gm = v["gemm"]
            t = v.get("tf")
            def ms(x):
                if not x:
                    return "—"
                q = x.get("quiet_median_ms")
                return f"{x['median_ms']:.2f}" + (f" [{q:.2f}]" if q else "")
            lines.append(
                f"| {row['name']} | {gm['flops_per_step'] / 1e9:.3f} "
                f"| {ms(v['numpy_gemm'])} | {gm['numpy_gemm_gflops']:.1f} "
                f"| {ms(v['mgrt'])} | {gm['mgrt_gflops']:.1f} "
                f"| {ms(t)} | {_f(gm.get('tf_gflops'), '{:.1f}')} "
                f"| {gm['mgrt_over_floor']:.2f} | {_f(gm.get('tf_over_floor'))} |")
        lines.append("")

    chain = [r for r in results["benchmarks"] if r["kind"] == "chain"]
    if chain:
        row = chain[0]
        lines.append(f"### Per-op dispatch: {ADD_CHAIN_LEN} chained Adds on a [1] float32 "
                     "tensor")
        lines.append("")
        lines.append("µs per op = time of one run / 1000 (goal for mgrt: ≤ 2 µs). TF with its "
                     f"defaults executes {row.get('tf_executed_nodes', '—')} nodes (grappler "
                     "folds the chain); with the meta-optimizer off it executes "
                     f"{row.get('tf_no_grappler_executed_nodes', '—')}. mgrt's plan has "
                     f"{row.get('mgrt_plan_steps', '—')} kernel steps. numpy: the 1000 np.add "
                     "calls alone; 'mgrt ÷ np.add' (mgrt's time per op in units of one "
                     "np.add call) is steadier than µs on this VM, whose speed for small Python "
                     "calls swings by up to 2x from one minute to the next (the host). Median of "
                     "all measurements [median of the quiet ones].")
        lines.append("")
        lines.append("| variant | mgrt µs/op | TF (default) µs/op | TF (no grappler) µs/op | "
                     "numpy np.add µs/op | mgrt ÷ np.add | goal |")
        lines.append("|---|---:|---:|---:|---:|---:|---|")
        na = row["variants"]["run"].get("numpy_add")
        for variant, v in row["variants"].items():
            def us(label):
                x = v.get(label)
                if not x:
                    return "—"
                q = x.get("quiet_median_ms")
                return f"{x['us_per_op']:.3f}" + (
                    f" [{q * 1e3 / ADD_CHAIN_LEN:.3f}]" if q else "")
            mu = v["mgrt"]["us_per_op"]
            lines.append(f"| {variant} | **{us('mgrt')}**{' ✓' if mu <= 2 else ' ✗'} "
                         f"| {us('tf')} | {us('tf_no_grappler')} "
                         f"| {us('numpy_add')} "
                         f"| {_f(na and mu / na['us_per_op'])} | ≤ 2 µs |")
        lines.append("")

    imp = results.get("imports")
    if imp:
        lines.append("### import_meta_graph")
        lines.append("")
        lines.append("| graph | nodes | size | mgrt ms | TF ms | speed ratio (TF ms / mgrt ms) |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for name, r in imp.items():
            t = r["tf"]
            lines.append(f"| {name} | {r['nodes']} | {r['size'] / 1024:.1f} KiB "
                         f"| {r['mgrt']['median_ms']:.2f} ({r['mgrt']['min_ms']:.2f}) "
                         f"| {_f(t and t['median_ms'])} | **{_f(r['speed_ratio'])}** |")
        lines.append("")
    return "\n".join(lines)


# --- profile ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _plan_hold(plan):
    """The thread-team hold the executor takes around a plan with CPU convolutions
    (kernels_cpu/_team.py: BLAS at one thread, kernels split over the team), so that kernels
    timed alone run as they do inside ``Plan.run`` (internal API; nothing where it differs)."""
    held = False
    try:
        from mgrt.kernels_cpu import _team
        held = bool(getattr(plan, "_team_hold", False)) and _team.hold()
    except Exception:  # noqa: BLE001
        _team = None
    try:
        yield
    finally:
        if held:
            _team.release()


def breakdown(runner, reps=200, rounds=9, extra=None):
    """Where one mgrt ``Session.run`` spends its time: the whole call; the Plan's ``run`` alone
    (caught by wrapping the cached plans' ``run`` for one call, so it gets exactly the feed
    values the Session gives it); the Session's parts around it where they exist (internal API,
    each guarded); and the kernels alone, called with the inputs a replay of the plan recorded.
    The parts are timed interleaved (every round times each part ``reps`` times), medians of
    ``rounds``, so that a change of the machine's load hits them alike. Parts whose internals
    changed are reported as unavailable."""
    sess, fetches, feed = runner.sess, runner.fetches, runner.feed_dict
    out = {}
    parts = {"Session.run total": lambda: sess.run(fetches, feed)}
    # the plan and its feed values, as Session.run calls it
    plan = fv = None
    try:
        plan, fv = mgrt_step_plan(runner)
        parts["Plan.run (executor + kernels)"] = lambda: plan.run(fv)
    except Exception as e:  # noqa: BLE001
        out["Plan.run"] = f"unavailable: {type(e).__name__}: {e}"
    # the Session's parts, where they are
    try:
        sess._fetch_mapper(fetches)
        parts["  fetch mapping (Session._fetch_mapper)"] = lambda: sess._fetch_mapper(fetches)
    except Exception as e:  # noqa: BLE001
        out["  fetch mapping"] = f"unavailable: {type(e).__name__}"
    try:
        sess._feed(feed)
        parts["  feed conversion and checks (Session._feed)"] = lambda: sess._feed(feed)
    except Exception as e:  # noqa: BLE001
        out["  feed conversion"] = f"unavailable: {type(e).__name__}"
    try:
        _, fetch_tensors, targets, _ = sess._fetch_mapper(fetches)[:4]
        feed_tensors, _ = sess._feed(feed)
        sess._plan(fetch_tensors, targets, feed_tensors)
        parts["  plan cache lookup (Session._plan)"] = (
            lambda: sess._plan(fetch_tensors, targets, feed_tensors))
    except Exception as e:  # noqa: BLE001
        out["  plan cache lookup"] = f"unavailable: {type(e).__name__}"
    # kernels alone: replay the plan once, recording every step's inputs
    calls = None
    self_timed = set()
    KA = "kernels alone (every step's run(*inputs), in a loop)"
    if plan is not None:
        try:
            values = [None] * plan.n_slots
            for s_, v in zip(plan.feed_slots, fv):
                values[s_] = v
            calls = []
            with np.errstate(all="ignore"):
                for st in plan.steps:
                    inputs = [values[s_] for s_ in st.in_slots]
                    for k in st.deref:
                        inputs[k] = inputs[k].value
                    outs = st.run(*inputs)
                    for s_, o in zip(st.out_slots, outs):
                        if s_ >= 0:
                            values[s_] = o
                    calls.append((st.run, inputs))

            perf = time.perf_counter

            def kernels():
                # the variables are reset first (untimed): replaying the update kernels with
                # the recorded gradients would otherwise drive them off (and into denormals)
                runner.reset()
                with _plan_hold(plan):
                    t0 = perf()
                    for f, a in calls:
                        f(*a)
                    return perf() - t0
            self_timed.add(KA)
            parts[KA] = kernels
        except Exception as e:  # noqa: BLE001
            calls = None
            out["kernels"] = f"unavailable: {type(e).__name__}: {e} (Plan internals changed?)"

    parts.update(extra or {})
    times = {k: [] for k in parts}
    with np.errstate(all="ignore"):
        for fn in parts.values():
            fn()
        keys = list(parts)
        for r in range(rounds):
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                fn = parts[k]
                runner.reset()  # every block trains from the initial values
                if k in self_timed:
                    times[k].append(sum(fn() for _ in range(reps)) / reps)
                    continue
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn()
                times[k].append((time.perf_counter() - t0) / reps)
    runner.reset()
    med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    out.update(med)
    total = med["Session.run total"]
    pr = med.get("Plan.run (executor + kernels)")
    if pr is not None:
        out["Session.run outside Plan.run"] = total - pr
    if calls is not None:
        n = len(plan.steps)
        out["steps in plan"] = n
        ex = pr - med[KA]
        out["executor loop overhead (Plan.run - kernels alone)"] = ex
        out["executor loop overhead per step"] = ex / n
        out["Session.run total / steps"] = total / n
        # the kernels by op type (each node's kernel timed alone)
        per_type = {}
        per_node = []
        with np.errstate(all="ignore"):
            stateful = {"Assign", "AssignAdd", "AssignSub"}
            for st, (f, a) in zip(plan.steps, calls):
                f(*a)
                vals = []
                m = max(1, reps // 4)
                updates = st.op.type.startswith("Apply") or st.op.type in stateful
                for _ in range(5):
                    if updates:
                        runner.reset()
                    with _plan_hold(plan):
                        t0 = time.perf_counter()
                        for _ in range(m):
                            f(*a)
                        vals.append((time.perf_counter() - t0) / m)
                per_type.setdefault(st.op.type, [0, 0.0])
                per_type[st.op.type][0] += 1
                per_type[st.op.type][1] += statistics.median(vals) * 1e6
                per_node.append((statistics.median(vals) * 1e6, st.op.name, st.op.type,
                                 " ".join("x".join(map(str, np.shape(
                                     getattr(x, "value", x) if hasattr(x, "store") else x)))
                                          or "()" for x in a)))
        runner.reset()
        per_node.sort(reverse=True)
        out["top nodes"] = [{"us": round(u, 2), "node": n, "type": t, "input shapes": sh}
                            for u, n, t, sh in per_node[:12]]
        out["kernel µs by op type"] = {k: {"count": c, "us": round(u, 2)}
                                       for k, (c, u) in sorted(per_type.items(),
                                                               key=lambda kv: -kv[1][1])}
    return out


def profile_report(graph_files, init_values_by_graph, steps_small=300, steps_chain=300,
                   steps_cnn=20):
    import cProfile
    import io
    import pstats

    try:
        import pyinstrument
    except ImportError:
        pyinstrument = None
    blas = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS",) if k in os.environ}
    parts = ["# mgrt run profile", "",
             "Written by `bench/bench_run.py --profile`. Times from this machine, under its load "
             "at the time; cProfile's own overhead inflates the Python-heavy parts (its "
             "totals are not wall-clock times).", "",
             f"{datetime.datetime.now().isoformat(timespec='seconds')}, numpy {np.__version__}, "
             f"BLAS threads: {blas or 'numpy default (one per core)'}, load average "
             f"{[round(x, 2) for x in os.getloadavg()]}.", ""]
    for bench, steps in (("mlp_small_train", steps_small), ("add_chain", steps_chain),
                         ("cnn_small_train", steps_cnn)):
        spec = BENCHES[bench]
        if spec["graph"] not in graph_files:
            continue
        r = Runner("mgrt", mtf, graph_files[spec["graph"]],
                   init_values_by_graph.get(spec["graph"]))
        r.setup(spec, make_batch(spec))
        step = r.step_fn("run")
        for _ in range(20):
            step()
        r.reset()
        parts.append(f"## {bench}: {steps} × `sess.run(fetches, feed_dict)`")
        parts.append("")
        extra = ({"numpy floor: np.add × 1000 alone": add_chain_numpy_fn()}
                 if spec["kind"] == "chain" else None)
        bd = breakdown(r, reps=max(5, steps // 2), extra=extra)
        parts.append("Breakdown of one run (µs, medians; each part timed alone):")
        parts.append("")
        parts.append("| part | µs |")
        parts.append("|---|---:|")
        for k, v in bd.items():
            if isinstance(v, (dict, list)):
                continue
            k = k.replace("  ", "&nbsp;&nbsp;")
            parts.append(f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |")
        parts.append("")
        tn = bd.get("top nodes")
        if tn:
            parts.append("The costliest nodes (kernel alone):")
            parts.append("")
            parts.append("| µs | node | op type | input shapes |")
            parts.append("|---:|---|---|---|")
            for x in tn:
                parts.append(f"| {x['us']:.1f} | {x['node']} | {x['type']} | "
                             f"{x['input shapes']} |")
            parts.append("")
        kt = bd.get("kernel µs by op type")
        if kt:
            parts.append("Kernels by op type (each kernel called alone with its recorded "
                         "inputs; µs summed over the plan's nodes of that type):")
            parts.append("")
            parts.append("| op type | nodes | µs |")
            parts.append("|---|---:|---:|")
            for k, v in kt.items():
                parts.append(f"| {k} | {v['count']} | {v['us']:.2f} |")
            parts.append("")
        r.reset()
        gc.collect()
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(steps):
            step()
        pr.disable()
        buf = io.StringIO()
        st = pstats.Stats(pr, stream=buf)
        st.sort_stats("tottime").print_stats(25)
        st.sort_stats("cumulative").print_stats(25)
        text = buf.getvalue()
        text = text.replace(ROOT + "/", "").replace(os.path.dirname(np.__file__), "numpy")
        parts.append("cProfile (by own time, then cumulative):")
        parts.append("")
        parts.append("```")
        parts.append(text.strip())
        parts.append("```")
        parts.append("")
        if pyinstrument is not None:
            r.reset()
            p = pyinstrument.Profiler(interval=0.0001)
            p.start()
            for _ in range(steps):
                step()
            p.stop()
            txt = p.output_text(unicode=True, color=False, show_all=False)
            parts.append("pyinstrument (sampling, 0.1 ms):")
            parts.append("")
            parts.append("```")
            parts.append(txt.replace(ROOT + "/", "").strip())
            parts.append("```")
            parts.append("")
        r.close()
    parts.append(f"Load average at the end: {[round(x, 2) for x in os.getloadavg()]}.")
    return "\n".join(parts)


# --- main ------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 3 repeats of about 0.05 s, no Adam row")
    ap.add_argument("--only", default=None,
                    help="benchmarks whose name contains this (comma-separated list allowed); "
                         "'import' for the import table alone")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--repeats", type=int, default=None, help="default 9 (--quick: 3)")
    ap.add_argument("--target-s", type=float, default=None,
                    help="seconds per measurement (default 0.4; --quick: 0.05)")
    ap.add_argument("--wait-quiet", type=float, default=None,
                    help="before each round, wait up to this many seconds for other processes "
                         "to use < 0.3 cores (default 10; --quick: 0)")
    ap.add_argument("--settle-s", type=float, default=None,
                    help="idle gap before each measurement (default 0.15; --quick: 0.02)")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="set OPENBLAS/OMP/MKL_NUM_THREADS for numpy (mgrt's BLAS) before it "
                         "loads; default: numpy's own (one per core). TensorFlow's threads are "
                         "not affected")
    ap.add_argument("--no-tf", action="store_true", help="time mgrt only, even if TF is there")
    ap.add_argument("--no-import", action="store_true", help="skip the import table")
    ap.add_argument("--profile", action="store_true",
                    help="also profile mgrt (small MLP step, Add chain): run_profile.md")
    ap.add_argument("--profile-only", action="store_true",
                    help="only the profile (no timing tables)")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 9)
    args.target_s = args.target_s or (0.05 if args.quick else 0.4)
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.quick else 10.0
    if args.settle_s is None:
        args.settle_s = 0.02 if args.quick else 0.15

    tf = load_tf(args.no_tf)
    if tf is None:
        print("TensorFlow is absent" + (" (--no-tf)" if args.no_tf else "") +
              f": mgrt only, on the MetaGraphs cached in {os.path.relpath(MODELS_DIR, ROOT)}.",
              flush=True)
    info = machine_info(tf)

    benches = dict(BENCHES)
    if args.quick:
        benches.pop("mlp_large_adam_train")
    want_import = not args.no_import
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        want_import = want_import and any(k in "import" for k in keys)
        benches = {n: s for n, s in benches.items() if any(k in n for k in keys)}
    if args.profile_only:
        benches = {n: s for n, s in BENCHES.items()
                   if n in ("mlp_small_train", "add_chain", "cnn_small_train")}
        want_import = False
    graphs = sorted({s["graph"] for s in benches.values()} |
                    (set(GRAPHS) if want_import and not args.only else set()))
    if want_import and args.only:
        graphs = sorted(set(graphs) | set(GRAPHS))

    tmp = tempfile.mkdtemp(prefix="mgrt-bench-run-")
    try:
        init_by_graph = {}
        if tf is not None:
            exported = export_graphs(tf, graphs, tmp)
            graph_files = {n: p for n, (p, _) in exported.items()}
            for n, (_, npz) in exported.items():
                with np.load(npz) as z:
                    init_by_graph[n] = {k: z[k] for k in z.files}
            tf_check = None
        else:
            graph_files = {}
            for n in graphs:
                p = os.path.join(MODELS_DIR, n + ".meta")
                if os.path.exists(p):
                    graph_files[n] = p
                else:
                    print(f"no cached MetaGraph {os.path.relpath(p, ROOT)}: skipping what "
                          "needs it (run once with TensorFlow to write it)", flush=True)
            benches = {n: s for n, s in benches.items() if s["graph"] in graph_files}
            tf_check = None
            idx = os.path.join(MODELS_DIR, "INDEX.json")
            if os.path.exists(idx):
                with open(idx, encoding="utf-8") as f:
                    tf_check = json.load(f).get("tf_check_values")

        rows = []
        if not args.profile_only:
            for name, spec in benches.items():
                rows.append(run_bench(name, spec, tf, graph_files,
                                      init_by_graph.get(spec["graph"]), tf_check, args))
        imports = None
        if want_import and not args.profile_only:
            print("import_meta_graph:", flush=True)
            imports = time_imports(tf, graph_files, args.repeats, args.wait_quiet)

        if tf is not None and rows:
            tf_values = {r["name"]: r["check"]["values"]["tf"] for r in rows}
            update_model_cache(exported, tf_values)

        os.makedirs(args.out, exist_ok=True)
        if rows or imports:
            date = datetime.datetime.now()
            results = {"date": date.isoformat(timespec="seconds"), "quick": args.quick,
                       "repeats": args.repeats, "target_s": args.target_s,
                       "wait_quiet_s": args.wait_quiet, "settle_s": args.settle_s,
                       "quiet_threshold_cores": QUIET_CORES, "machine": info,
                       "tensorflow_present": tf is not None, "benchmarks": rows,
                       "imports": imports, "loadavg_at_end": [round(x, 2)
                                                              for x in os.getloadavg()]}
            md = markdown(results)
            print()
            print(md)
            host = "".join(c if c.isalnum() or c in "-_." else "_"
                           for c in socket.gethostname()) or "local"
            suffix = ("_quick" if args.quick else "") + (
                f"_blas{args.blas_threads}" if args.blas_threads else "") + (
                f"_{args.only.replace(',', '+')}" if args.only else "")
            suffix = "".join(c if c.isalnum() or c in "-_+." else "_" for c in suffix)
            jpath = os.path.join(args.out, f"run_{host}_{date:%Y-%m-%d}{suffix}.json")
            with open(jpath, "w", encoding="utf-8") as fh:
                json.dump(results, fh, indent=1, default=float)
                fh.write("\n")
            mpath = os.path.join(args.out, f"run_latest{suffix}.md")
            with open(mpath, "w", encoding="utf-8") as fh:
                fh.write("# Run benchmark: mgrt vs TensorFlow (latest run)\n\n")
                fh.write("Written by `bench/bench_run.py`; see `bench/README.md`.\n\n")
                fh.write(md + "\n")
            print(f"wrote {os.path.relpath(jpath, ROOT)} and {os.path.relpath(mpath, ROOT)}")

        if args.profile or args.profile_only:
            text = profile_report(graph_files, init_by_graph)
            ppath = os.path.join(args.out, "run_profile" + (
                f"_blas{args.blas_threads}" if args.blas_threads else "") + ".md")
            with open(ppath, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            print(f"wrote {os.path.relpath(ppath, ROOT)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [r["name"] for r in rows if r["check"]["ok"] is False]
    if failed:
        print(f"MISMATCH between mgrt and TensorFlow in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
