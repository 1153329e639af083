"""PyTorch reference of `train_bench.rs`: the same workloads, the same JSON lines.

`python crates/trainer/benches/bench_torch.py [--runs N] [--threads T] [FIGURE...]` (needs torch
and torchvision; `cargo xtask bench` runs it right after the Rust figures). Each figure named
(default: all) runs in a child process of its own, so that `peak_rss_mib` (`ru_maxrss` at the end
of the child) is the peak memory of that one workload, interpreter and libtorch included;
`start_rss_mib` is the resident set after `import torch`, before the workload is built. Each
value is the median of `--runs` timed runs after one untimed warm-up run.

Workloads (see train_bench.rs): torchvision resnet18 with the CIFAR stem (3x3 stride-1 conv1, no
max-pool) in eval mode under `torch.no_grad()`; RepDistiller's resnet8x4 (3->32 stem, stages
64/128/256 of one BasicBlock each, 10-class fc) with the projection MLP 256->256->ReLU->128 in
train mode; NT-Xent (mean over the 2N views, self-similarity excluded) and Hinton's KD
(`kl_div(..., 'batchmean') * T^2`); SGD lr 0.05, momentum 0.9, weight decay 5e-4 on parameters of
rank >= 2 only (the trainer's groups); torchvision v2 SimCLR-CIFAR augmentation on uint8 images.
"""

import argparse
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.transforms import v2

VIEWS, AUG_IMAGES, LR = 128, 512, 0.05
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def current_rss_mib():
    """VmRSS of this process in MiB, where /proc has it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def median_secs(name, runs, step):
    step()
    secs = []
    for _ in range(runs):
        t = time.perf_counter()
        step()
        secs.append(time.perf_counter() - t)
    med = statistics.median(secs)
    print(
        f"# {name}: median {med * 1e3:.2f} ms (min {min(secs) * 1e3:.2f}, max {max(secs) * 1e3:.2f}) over {runs} runs",
        file=sys.stderr,
    )
    return med


def teacher():
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    return net.eval()


class BasicBlock(nn.Module):
    def __init__(self, c_in, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or c_in != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet8x4(nn.Module):
    """RepDistiller's resnet8x4; forward returns (pooled features, logits)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.layer1 = BasicBlock(32, 64, 1)
        self.layer2 = BasicBlock(64, 128, 2)
        self.layer3 = BasicBlock(128, 256, 2)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return pooled, self.fc(pooled)


class Student(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = ResNet8x4(10)
        self.projector = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 128))

    def forward(self, x):
        pooled, logits = self.backbone(x)
        return logits, self.projector(pooled)


def sgd(model):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
        momentum=0.9,
    )


def nt_xent(z_a, z_b, t):
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    n2 = z.shape[0]
    s = (z @ z.T / t).masked_fill(torch.eye(n2, dtype=torch.bool), float("-inf"))
    n = n2 // 2
    positives = torch.cat([torch.arange(n, n2), torch.arange(0, n)])
    return F.cross_entropy(s, positives)


def kd_loss(s, t, temp):
    return F.kl_div(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1), reduction="batchmean") * temp * temp


def teacher_forward(runs):
    net = teacher()
    xs = torch.randn(VIEWS, 3, 32, 32)

    def step():
        with torch.no_grad():
            net(xs)

    return VIEWS / median_secs("teacher_resnet18_forward", runs, step)


def train_step(student, opt, xs, loss_fn):
    opt.zero_grad(set_to_none=True)
    logits, z = student(xs)
    n = xs.shape[0] // 2
    loss = loss_fn(logits, z[:n], z[n:])
    loss.backward()
    opt.step()


def student_step(runs):
    student = Student().train()
    opt = sgd(student)
    xs = torch.randn(VIEWS, 3, 32, 32)
    step = lambda: train_step(student, opt, xs, lambda _, za, zb: nt_xent(za, zb, 0.5))  # noqa: E731
    return VIEWS / median_secs("student_resnet8x4_simclr_step", runs, step)


def distill_step(runs):
    net = teacher()
    student = Student().train()
    opt = sgd(student)
    xs = torch.randn(VIEWS, 3, 32, 32)

    def step():
        with torch.no_grad():
            t_logits = net(xs)
        train_step(
            student,
            opt,
            xs,
            lambda logits, za, zb: 0.5 * nt_xent(za, zb, 0.5) + 0.5 * kd_loss(logits, t_logits, 4.0),
        )

    return VIEWS / median_secs("distill_step_r18_to_r8x4", runs, step)


def nt_xent_fwd_bwd(n, runs):
    z_a = torch.randn(n, 128, requires_grad=True)
    z_b = torch.randn(n, 128, requires_grad=True)

    def step():
        z_a.grad, z_b.grad = None, None
        nt_xent(z_a, z_b, 0.5).backward()

    return 1e3 * median_secs(f"nt_xent_fwd_bwd_n{n}_d128", runs, step)


def augment_two_views(runs):
    torch.set_num_threads(1)
    pipeline = v2.Compose(
        [
            v2.RandomResizedCrop(32, scale=(0.08, 1.0)),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )
    images = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(AUG_IMAGES)]

    def step():
        views = [torch.stack([pipeline(x) for x in images]) for _ in range(2)]
        assert len(views) == 2

    return AUG_IMAGES / median_secs("simclr_aug_two_views_1thread", runs, step)


def sgemm(runs):
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2.0 * n**3 / median_secs("sgemm_2048", runs, lambda: torch.mm(a, b)) / 1e9


FIGURES = {
    "teacher_resnet18_forward": ("views/s", teacher_forward),
    "student_resnet8x4_simclr_step": ("views/s", student_step),
    "distill_step_r18_to_r8x4": ("views/s", distill_step),
    "nt_xent_fwd_bwd_n1024_d128": ("ms", lambda runs: nt_xent_fwd_bwd(1024, runs)),
    "nt_xent_fwd_bwd_n4096_d128": ("ms", lambda runs: nt_xent_fwd_bwd(4096, runs)),
    "simclr_aug_two_views_1thread": ("images/s", augment_two_views),
    "sgemm_2048": ("GFLOP/s", sgemm),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help="measure here, not in child processes")
    parser.add_argument("figures", nargs="*", metavar="FIGURE", help="default: all; each in a child process")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    unknown = [f for f in args.figures if f not in FIGURES]
    if unknown:
        parser.error(f"unknown figures {unknown}; known: {', '.join(FIGURES)}")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    names = args.figures or list(FIGURES)
    if not args.child:
        print(
            f"# bench_torch: torch {torch.__version__}, {args.threads} threads, median of {args.runs} runs after a warm-up",
            file=sys.stderr,
        )
        failed = []
        for name in names:
            cmd = [sys.executable, __file__, "--child", "--runs", str(args.runs), "--threads", str(args.threads), name]
            if subprocess.run(cmd).returncode != 0:
                failed.append(name)
        if failed:
            sys.exit(f"figures failed: {', '.join(failed)}")
        return
    for name in names:
        unit, run = FIGURES[name]
        start = current_rss_mib()
        value = run(args.runs)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        start = "null" if start is None else f"{start:.1f}"
        print(
            f'{{"figure": "{name}", "value": {value:.3f}, "unit": "{unit}", "peak_rss_mib": {peak:.1f}, "start_rss_mib": {start}}}',
            flush=True,
        )


if __name__ == "__main__":
    main()
