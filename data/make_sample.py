#!/usr/bin/env python3
"""Cut the bundled CIFAR-10 sample from the project's JPEG tarballs.

Usage: python3 data/make_sample.py SRC_DIR [--train 200] [--test 100]

SRC_DIR holds `train.tar.gz` and `test.tar.gz` (CIFAR-10 as JPEG image folders,
`train/<class>/0000.jpg` ...). The first TRAIN (TEST) images of each class, by file
name, are copied byte for byte (no re-encoding) into `data/sample/train/<class>/` and
`data/sample/test/<class>/` next to this script. Deterministic: the same tarballs give
the same sample.
"""
import argparse
import pathlib
import shutil
import tarfile

HERE = pathlib.Path(__file__).resolve().parent


def cut(tarball: pathlib.Path, split: str, per_class: int, out: pathlib.Path) -> int:
    wanted = {f"{i:04d}.jpg" for i in range(per_class)}
    written = 0
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            parts = pathlib.PurePosixPath(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] != split:
                continue
            if parts[2] not in wanted:
                continue
            dest = out / split / parts[1] / parts[2]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=pathlib.Path)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=100)
    args = parser.parse_args()
    out = HERE / "sample"
    if out.exists():
        shutil.rmtree(out)
    n_train = cut(args.src / "train.tar.gz", "train", args.train, out)
    n_test = cut(args.src / "test.tar.gz", "test", args.test, out)
    print(f"wrote {n_train} train and {n_test} test images under {out}")


if __name__ == "__main__":
    main()
