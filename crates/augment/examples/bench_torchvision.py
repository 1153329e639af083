"""torchvision v2 on the workload of bench_augment.rs: two SimCLR views (simclr_cifar(32)) of
512 random 32x32 uint8 images, images per second on one thread and on all cores.

`python crates/augment/examples/bench_torchvision.py` (needs torch and torchvision).
Two variants: `uint8` crops and jitters the uint8 tensor and converts to float at the end (the
usual way to write it), `float` converts first (the semantics of the Rust pipeline).
"""

import multiprocessing as mp
import os
import time

import torch
from torchvision.transforms import v2

N, SIDE, MIN_TIME = 512, 32, 3.0
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def simclr_cifar(float_first):
    head = [v2.ToDtype(torch.float32, scale=True)] if float_first else []
    tail = [] if float_first else [v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(
        head
        + [
            v2.RandomResizedCrop(SIDE, scale=(0.08, 1.0)),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
        + tail
        + [v2.Normalize(MEAN, STD)]
    )


def images():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, SIDE, SIDE), dtype=torch.uint8, generator=g) for _ in range(N)]


def work(args):
    """Two views of every image, repeated for at least MIN_TIME; returns (images, seconds)."""
    float_first, imgs = args
    torch.set_num_threads(1)
    t = simclr_cifar(float_first)
    for x in imgs[:32]:
        t(x), t(x)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < MIN_TIME:
        for x in imgs:
            t(x), t(x)
        done += len(imgs)
    return done, time.perf_counter() - start


def main():
    torch.set_num_threads(1)
    imgs = images()
    cores = os.cpu_count() or 1
    print(f"torch {torch.__version__}, two SimCLR views of {N} random 32x32 uint8 images")
    for float_first in [False, True]:
        name = "float" if float_first else "uint8"
        done, secs = work((float_first, imgs))
        one = done / secs
        chunks = [imgs[i::cores] for i in range(cores)]
        with mp.get_context("spawn").Pool(cores) as pool:
            results = pool.map(work, [(float_first, c) for c in chunks])
        # Each worker runs at least MIN_TIME; the aggregate rate is the sum of the rates.
        all_rate = sum(d / s for d, s in results)
        print(f"{name:5}: 1 thread {one:8.0f} images/s, {cores} processes {all_rate:8.0f} images/s")


if __name__ == "__main__":
    main()
