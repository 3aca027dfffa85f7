"""Copy a size-capped subset of a miniImageNet folder tree for the GPU check.

The device machine receives only the checkout (64 MiB in all), so the check's real data travels
as an ignored folder of the repository (``gpu_data/``, see ``.gitignore``): the first
``--train-per-class`` images (by file name) of every train class and the first
``--val-per-class`` of every val class, in the same ``<split>/<wnid>/*.jpg`` layout the
miniImageNet loader reads. Refuses to write more than ``--max-mib``.

    python benchmarks/gpu_subset.py ../shared/data/miniimagenet gpu_data/miniimagenet
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def plan(src: Path, per_class: dict[str, int]) -> list[tuple[Path, Path]]:
    """(source, destination relative to the subset root) of every file to copy."""
    files: list[tuple[Path, Path]] = []
    for split, n in per_class.items():
        root = src / split
        if not root.is_dir():
            raise SystemExit(f"gpu_subset: {root} is not a directory (expected {src}/<split>/<class>/*.jpg)")
        classes = sorted(p for p in root.iterdir() if p.is_dir())
        if not classes:
            raise SystemExit(f"gpu_subset: {root} has no class folders")
        for cls in classes:
            images = sorted(p for p in cls.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if len(images) < n:
                raise SystemExit(f"gpu_subset: {cls} holds {len(images)} images, fewer than the {n} asked for")
            files += [(p, Path(split, cls.name, p.name)) for p in images[:n]]
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="miniImageNet root with train/ and val/ class folders")
    p.add_argument("dst", type=Path, help="subset root to create (inside the checkout, git-ignored)")
    p.add_argument("--train-per-class", type=int, default=100, help="images per train class (default 100)")
    p.add_argument("--val-per-class", type=int, default=60, help="images per val class (default 60)")
    p.add_argument("--max-mib", type=float, default=60.0, help="refuse a larger subset (default 60)")
    args = p.parse_args(argv)

    files = plan(args.src, {"train": args.train_per_class, "val": args.val_per_class})
    mib = sum(s.stat().st_size for s, _ in files) / 2**20
    if mib > args.max_mib:
        raise SystemExit(
            f"gpu_subset: the subset would take {mib:.1f} MiB, over --max-mib {args.max_mib:g} "
            "(lower --train-per-class or --val-per-class)"
        )
    tmp = args.dst.with_name(args.dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for src, rel in files:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp / rel)
    shutil.rmtree(args.dst, ignore_errors=True)
    tmp.rename(args.dst)  # complete or absent: never a half-copied subset
    print(f"{args.dst}: {len(files)} images, {mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
