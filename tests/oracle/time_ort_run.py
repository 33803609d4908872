#!/usr/bin/env python3
"""Benchmark helper: median seconds of one onnxruntime inference run.

usage: time_ort_run.py MODEL THREADS RUNS INPUT.pb [INPUT.pb ...]
Feeds the TensorProto inputs to the model's inputs in order (intra_op_num_threads =
THREADS, inter_op_num_threads = 1, CPU provider), runs once to warm up, then times RUNS
runs of `session.run` and prints the median in seconds on stdout. Used by
`cc-bench run` to time onnxruntime next to the CPU executor on the same input.
"""
import statistics
import sys
import time

import onnxruntime as ort

from run_ort import load_feed


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    model, threads, runs, inputs = argv[0], int(argv[1]), int(argv[2]), argv[3:]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    feed = load_feed(sess, inputs)
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    print(statistics.median(times))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
