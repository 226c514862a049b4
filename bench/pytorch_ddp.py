#!/usr/bin/env python3
"""PyTorch DDP on the same job as ringtrain's 2-worker cluster, for the benchmark report's comparison.

The same LeNet-5 (conv 6@5x5 pad 2, relu, max-pool 2; conv 16@5x5, relu, max-pool 2; dense 120, 84, 10), Adam
(lr 2e-3), batch 64 per worker, cross-entropy on MNIST pixels in [0, 1]; N processes on localhost with the gloo backend
(torch.distributed's CPU allreduce) and one compute thread each (torch.set_num_threads(1)). DistributedSampler shards
each epoch. Samples/s is counted as ringtrain counts it: samples trained, summed over the workers, per second of
training (after one warm-up step, which both sides' first steps make slow).

    python3 bench/pytorch_ddp.py --data-dir DIR [--workers 2] [--train-limit 12800] [--batch-size 64] [--json]

--workers 1 trains the model alone, without DDP (two of them side by side are PyTorch's own ceiling).

Prints one JSON line with --json: {"samplesPerSec", "seconds", "steps", "workers", "torch", "loss"}.
"""
import argparse
import json
import os
import struct
import sys
import time


def read_idx(path, limit):
    with open(path, "rb") as f:
        data = f.read()
    magic, count = struct.unpack(">II", data[:8])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    n = min(count, limit) if limit else count
    per = 1
    for d in shape[1:]:
        per *= d
    start = 4 + 4 * dims
    return data[start : start + n * per], n, shape[1:]


def load_mnist(data_dir, limit):
    import torch

    images, n, shape = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte"), limit)
    labels, _, _ = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte"), limit)
    x = torch.frombuffer(bytearray(images), dtype=torch.uint8).float().div_(255).view(n, 1, shape[0], shape[1])
    y = torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()
    return x, y


def lenet5():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )


def worker(rank, args, port, results):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=args.workers)
    torch.manual_seed(1)
    x, y = load_mnist(args.data_dir, args.train_limit)
    sampler = DistributedSampler(TensorDataset(x, y), num_replicas=args.workers, rank=rank, shuffle=True, seed=1)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, sampler=sampler, drop_last=True)
    # One worker is the plain single-process trainer (the ceiling runs): no DDP wrapper, no gradient hooks.
    model = DistributedDataParallel(lenet5()) if args.workers > 1 else lenet5()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = 0
    samples = 0
    started = None
    loss = float("nan")
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            out = loss_fn(model(xb), yb)
            out.backward()
            opt.step()
            loss = out.item()
            if started is None:
                dist.barrier()
                started = time.perf_counter()
            else:
                steps += 1
                samples += xb.shape[0]
    dist.barrier()
    seconds = time.perf_counter() - started
    results.put({"rank": rank, "samples": samples, "seconds": seconds, "steps": steps, "loss": loss})
    dist.destroy_process_group()


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train-limit", type=int, default=12_800)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    import torch
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, args, port, results)) for r in range(args.workers)]
    for proc in procs:
        proc.start()
    rows = [results.get(timeout=3600) for _ in procs]
    for proc in procs:
        proc.join()
    seconds = max(r["seconds"] for r in rows)
    samples = sum(r["samples"] for r in rows)
    out = {
        "samplesPerSec": samples / seconds,
        "seconds": seconds,
        "steps": rows[0]["steps"] + 1,
        "workers": args.workers,
        "torch": torch.__version__,
        "loss": rows[0]["loss"],
    }
    print(json.dumps(out) if args.json else f"{out['samplesPerSec']:.0f} samples/s ({out})")


if __name__ == "__main__":
    sys.exit(main())
