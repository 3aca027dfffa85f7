"""Preparing real miniImageNet: time and peak memory, and folder vs pickle giving the same tensors.

Three child processes, one after the other, each reporting its wall time and peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, with its RSS after the imports):

1. ``fsbench`` prepares miniImageNet from the folder-per-class copy (``--data-root``) into a
   fresh cache under ``--work``;
2. the ``mini-imagenet-cache-{split}.pkl`` files are written from the same folder as Ren et al.'s
   ``few-shot-ssl-public/fewshot/data/mini_imagenet.py`` writes them (rows in the committed Ravi
   CSV's order, each named JPEG decoded -- with Pillow here, RGB, already 84x84 -- and stacked
   into ``image_data``; ``class_dict`` {wnid: [rows]}; ``pickle.dump`` with the highest protocol):
   independent of fsbench's decoder;
3. ``fsbench`` prepares miniImageNet from those pickles into a second cache.

Then both cache entries are compared (images, labels, class names), a split at a time in chunks.

    python benchmarks/prepare_miniimagenet.py                      # train and val, ~2 minutes
    python benchmarks/prepare_miniimagenet.py --splits val --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "miniimagenet"
SPLIT_DIR = ROOT / "fsbench" / "data" / "splits" / "miniimagenet"  # the committed Ravi CSVs
CHUNK = 2048


def _child_prepare(source: str, cache: str, splits: list[str]) -> dict:
    import resource
    import time

    from fsbench.data import miniimagenet
    from fsbench.data.prepare import prepare_entry

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    began = time.perf_counter()
    entry, built = prepare_entry(miniimagenet.source(Path(source), splits=splits), Path(cache),
                                 progress=False)
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert built, f"{entry.path} was already prepared"
    return {"entry": str(entry.path), "seconds": round(seconds, 1), "peak_rss_mib": round(peak),
            "rss_after_imports_mib": round(base), "kind": entry.meta["kind"],
            "images": {s: shape[0] for s, shape in entry.meta["shapes"].items()}}


def _child_write_pickles(folder: str, out: str, splits: list[str]) -> dict:
    """The pickles as Ren et al.'s script writes them, from the folder's JPEGs (no fsbench code)."""
    from PIL import Image

    written = {}
    for split in splits:
        class_dict: dict[str, list[int]] = {}
        images = []
        with (SPLIT_DIR / f"{split}.csv").open() as f:
            for i, (filename, wnid) in enumerate(r for r in csv.reader(f) if r[1] != "label"):
                class_dict.setdefault(wnid, []).append(i)
                with Image.open(Path(folder) / split / wnid / filename) as im:
                    images.append(np.asarray(im.convert("RGB")))
        path = Path(out) / f"mini-imagenet-cache-{split}.pkl"
        with path.open("wb") as f:
            pickle.dump({"image_data": np.stack(images), "class_dict": class_dict}, f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        written[path.name] = path.stat().st_size
    return written


def _run_child(what: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", what, *args], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(a: str, b: str) -> dict:
    """Both entries hold the same images, labels and class names, split by split."""
    from fsbench.data.cache import read_entry

    ea, eb = read_entry(Path(a)), read_entry(Path(b))
    assert ea is not None and eb is not None
    out = {}
    for split in ea.meta["shapes"]:
        ia, la = ea.split_arrays(split)
        ib, lb = eb.split_arrays(split)
        same = (ia.shape == ib.shape and bool((la == lb).all())
                and ea.meta["classes"][split] == eb.meta["classes"][split]
                and all(bool((ia[i:i + CHUNK] == ib[i:i + CHUNK]).all())
                        for i in range(0, ia.shape[0], CHUNK)))
        out[split] = {"images": int(ia.shape[0]), "identical": same}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA,
                        help="miniImageNet folder per class (default ../shared/data/miniimagenet)")
    parser.add_argument("--splits", default="train,val", help="splits to prepare (default train,val)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, *rest = args.child
        fn = {"prepare": _child_prepare, "pickles": _child_write_pickles}[what]
        print(json.dumps(fn(rest[0], rest[1], rest[2].split(","))))
        return
    if not args.data_root.is_dir():
        raise SystemExit(f"no miniImageNet folder at {args.data_root}")
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        (work / "pkl").mkdir()
        folder = _run_child("prepare", str(args.data_root), str(work / "cache-folder"), args.splits)
        written = _run_child("pickles", str(args.data_root), str(work / "pkl"), args.splits)
        pickled = _run_child("prepare", str(work / "pkl"), str(work / "cache-pickle"), args.splits)
        result = {"folder": folder, "pickles_written_bytes": written, "pickle": pickled,
                  "equal": compare(folder["entry"], pickled["entry"])}
    for name in ("folder", "pickle"):
        r = result[name]
        print(f"prepare from {r['kind']}: {sum(r['images'].values()):,} images in {r['seconds']} s, "
              f"peak RSS {r['peak_rss_mib']} MiB ({r['rss_after_imports_mib']} MiB after imports)")
    for split, r in result["equal"].items():
        print(f"{split}: {r['images']:,} images, folder vs pickle identical: {r['identical']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
