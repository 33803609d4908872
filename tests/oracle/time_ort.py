#!/usr/bin/env python3
"""Benchmark helper: median seconds to create an onnxruntime session for a model.

usage: time_ort.py MODEL RUNS
Prints one number (seconds, median over RUNS) on stdout. Session creation is ORT's own
import + graph optimization, the closest onnxruntime counterpart of
import -> canonicalize -> export.
"""
import statistics
import sys
import time

import onnxruntime as ort


def main(model, runs):
    times = []
    for _ in range(runs):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        start = time.perf_counter()
        ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        times.append(time.perf_counter() - start)
    print(statistics.median(times))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
