#!/usr/bin/env python3
"""Writes PIL's decode of every JPEG in CIFAR-10's tarballs, for the `jpeg_vs_pil` example.

usage: pil_decode_tarball.py DIR OUT
  DIR holds train.tar.gz and test.tar.gz (`<split>/<class>/<file>.jpg`); for each split this writes
  OUT/<split>.u8: PIL's `Image.open(f).convert("RGB")` of each image (all must be 32x32), CHW uint8,
  one after the other in the order the trainer's tarball reader uses (classes sorted, then file
  names sorted), and OUT/<split>.txt, the member names in that order.
`cargo xtask jpeg-check` runs this and then the example.
"""
import io
import pathlib
import sys
import tarfile

import numpy as np
import PIL
from PIL import Image, features


def main():
    src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    print(f"PIL {PIL.__version__}, libjpeg-turbo {features.version_feature('libjpeg_turbo')}")
    for split in ("train", "test"):
        members = {}
        with tarfile.open(src / f"{split}.tar.gz") as tar:
            for m in tar:
                parts = m.name.removeprefix("./").split("/")
                if m.isfile() and len(parts) == 3 and parts[0] == split and parts[2].lower().endswith(".jpg") and not parts[2].startswith("."):
                    members[(parts[1], parts[2])] = tar.extractfile(m).read()
        names = sorted(members)
        with open(out / f"{split}.u8", "wb") as f:
            for key in names:
                img = Image.open(io.BytesIO(members[key])).convert("RGB")
                if img.size != (32, 32):
                    raise SystemExit(f"{split}/{key[0]}/{key[1]}: {img.size}, expected 32x32")
                f.write(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)).tobytes())
        (out / f"{split}.txt").write_text("".join(f"{split}/{c}/{n}\n" for c, n in names))
        print(f"{split}: {len(names)} images -> {out / (split + '.u8')}")


if __name__ == "__main__":
    main()
