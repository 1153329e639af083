"""The CIFAR-10 teacher recipe (configs/cifar10_teacher.toml) in PyTorch, for the side-by-side.

`python crates/trainer/benches/teacher_torch.py --data ../shared/data/cifar10 [--epochs-run N]
[--threads 2] [--json FILE]` trains RepDistiller's resnet8x4 as `cargo xtask teacher` does and
prints one JSON line per epoch (`seconds`, `images_per_s`, and `test_accuracy` where evaluated),
so that an epoch of ours (`seconds` of an epoch line in the run's metrics.jsonl) and an epoch of
PyTorch's compare on the same machine. `--epochs-run N` stops after N of the recipe's epochs (the
schedule is still the full recipe's); without it the whole recipe runs and the final accuracy is
comparable to the bundled teacher's.

The recipe, as the trainer implements it:
- data: the CIFAR-10 JPEG tarballs, decoded by PIL (as the trainer decodes them), in memory;
- views: random crop 32 with 4 pixels of zero padding, horizontal flip (p = 0.5), normalised
  with the CIFAR mean and standard deviation (`augment::presets::crop_flip`);
- batches: 256, a fresh random order each epoch, the last incomplete batch dropped;
- SGD, Nesterov momentum 0.9, weight decay 5e-4 on weights of rank >= 2 only (not on batch-norm
  parameters and biases), peak lr 0.2;
- lr: linear warm-up over 2 epochs (`lr * (step + 1) / warmup`), then linear decay to zero
  (`lr * (1 - t)`, t the fraction of the post-warm-up steps done), per step;
- cross-entropy with label smoothing 0.1;
- a weight average with decay 0.995 after every step (`AveragedModel(get_ema_multi_avg_fn(0.995),
  use_buffers=True)`), which is what is evaluated;
- evaluation every 2 epochs and at the end: test accuracy of the average with test-time flip
  (the mean of the logits of the image and of its mirror).
The random draws differ from the trainer's (its RNG is its own); the work per epoch is the same.
"""

import argparse
import io
import json
import os
import sys
import tarfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import ResNet8x4  # noqa: E402  (the same network as the benchmark's)

CIFAR_MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
CIFAR_STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
EPOCHS, BATCH, LR, WARMUP, EVAL_EVERY = 18, 256, 0.2, 2.0, 2


def load_split(path, split):
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) of a tarball, classes in sorted order."""
    items = []
    with tarfile.open(path, "r:gz") as tar:
        for m in tar:
            if not m.isfile() or not m.name.endswith(".jpg"):
                continue
            parts = m.name.split("/")
            cls = parts[-2]
            img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
            items.append((cls, m.name, np.asarray(img)))
    classes = sorted({c for c, _, _ in items})
    items.sort(key=lambda t: (classes.index(t[0]), t[1]))
    x = torch.from_numpy(np.stack([a for _, _, a in items])).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([classes.index(c) for c, _, _ in items])
    return x, y


def normalise(x_uint8):
    return (x_uint8.float() / 255.0 - CIFAR_MEAN) / CIFAR_STD


def crop_flip(x, padding=4):
    """Random 32x32 crop of the zero-padded images and random horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (n,))
    ox = torch.randint(0, 2 * padding + 1, (n,))
    flip = torch.rand(n) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        v = padded[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w]
        out[i] = v.flip(-1) if flip[i] else v
    return out


def learning_rate(step, steps_per_epoch):
    total = EPOCHS * steps_per_epoch
    warmup = min(round(WARMUP * steps_per_epoch), total)
    if step < warmup:
        return LR * (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return LR * (1.0 - min(t, 1.0))


@torch.no_grad()
def test_accuracy(model, x, y):
    model.eval()
    correct = 0
    for i in range(0, len(x), 500):
        xb = normalise(x[i : i + 500])
        logits = (model(xb)[1] + model(xb.flip(-1))[1]) / 2
        correct += (logits.argmax(1) == y[i : i + 500]).sum().item()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/cifar10")
    ap.add_argument("--epochs-run", type=int, default=EPOCHS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also append the JSON lines to this file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.time()
    x_train, y_train = load_split(os.path.join(a.data, "train.tar.gz"), "train")
    x_test, y_test = load_split(os.path.join(a.data, "test.tar.gz"), "test")
    print(f"# loaded {len(x_train)} + {len(x_test)} images in {time.time() - t0:.1f} s", file=sys.stderr)
    model = ResNet8x4(10)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
        momentum=0.9,
        nesterov=True,
    )
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.995), use_buffers=True
    )
    steps_per_epoch = len(x_train) // BATCH
    step = 0
    out = open(a.json, "a") if a.json else None
    total_seconds = 0.0
    for epoch in range(min(a.epochs_run, EPOCHS)):
        model.train()
        order = torch.randperm(len(x_train))
        start = time.time()
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * BATCH : (b + 1) * BATCH]
            xb = normalise(crop_flip(x_train[idx]))
            lr = learning_rate(step, steps_per_epoch)
            for g in opt.param_groups:
                g["lr"] = lr
            # The network returns (pooled features, logits).
            loss = F.cross_entropy(model(xb)[1], y_train[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update_parameters(model)
            loss_sum += loss.item()
            step += 1
        seconds = time.time() - start
        total_seconds += seconds
        rec = {
            "kind": "epoch",
            "epoch": epoch,
            "step": step,
            "cross_entropy": loss_sum / steps_per_epoch,
            "seconds": seconds,
            "images_per_s": steps_per_epoch * BATCH / seconds,
            "torch": torch.__version__,
            "threads": a.threads,
        }
        if (epoch + 1) % EVAL_EVERY == 0 or epoch + 1 == EPOCHS:
            e0 = time.time()
            rec["test_accuracy"] = test_accuracy(ema.module, x_test, y_test)
            rec["eval_seconds"] = time.time() - e0
        rec["train_seconds_total"] = total_seconds
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()


if __name__ == "__main__":
    main()
