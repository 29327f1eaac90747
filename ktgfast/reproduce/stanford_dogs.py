"""Stanford Dogs (Khosla et al. 2011) in the layout of the ``imagefolder``
dataset with the official split, as the thesis uses it (ch. 4, §4.4.1:
12,000 training and 8,580 test images of 120 breeds).

    python -m ktgfast.reproduce.stanford_dogs SRC DST

``SRC`` is the unpacked official release: ``Images/<breed>/*.jpg`` and
``train_list.mat`` / ``test_list.mat`` (from ``lists.tar``; ``SRC/lists/`` is
looked in too).  ``DST`` gets ``train/<breed>/`` and ``test/<breed>/`` of
symbolic links to the images (copies with ``--copy``), nothing else; a
``DST`` that already holds a train/ or test/ folder is refused.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

LISTS = {"train": "train_list.mat", "test": "test_list.mat"}
EXPECTED = {"train": 12000, "test": 8580}


def _list_file(src: Path, name: str) -> Path:
    for p in (src / name, src / "lists" / name):
        if p.is_file():
            return p
    raise FileNotFoundError(f"{src}: no {name} (nor lists/{name}); unpack the official lists.tar there")


def read_list(path: Path) -> list[str]:
    """The image paths (``<breed>/<file>.jpg``) of an official split list."""
    from scipy.io import loadmat

    # a MATLAB cell array (N, 1) of strings: entry i is [array(['<breed>/<file>.jpg'])]
    return [str(e[0][0]) for e in loadmat(path)["file_list"]]


def prepare(src: str | Path, dst: str | Path, copy: bool = False, strict: bool = True) -> dict[str, int]:
    """Build ``dst/train`` and ``dst/test``; returns the image count per split.
    ``strict``: refuse counts other than the official 12,000 / 8,580."""
    src, dst = Path(src), Path(dst)
    images = src / "Images"
    if not images.is_dir():
        raise FileNotFoundError(f"{src}: no Images/ folder (the official images.tar unpacked)")
    for split in LISTS:
        if (dst / split).exists():
            raise ValueError(f"{dst / split} exists; choose an empty DST")
    counts = {}
    for split, name in LISTS.items():
        files = read_list(_list_file(src, name))
        if strict and len(files) != EXPECTED[split]:
            raise ValueError(f"{name}: {len(files)} images; the official {split} split has {EXPECTED[split]}")
        for rel in files:
            source = images / rel
            if not source.is_file():
                raise FileNotFoundError(f"{name} lists {rel}, which is not under {images}")
            target = dst / split / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if copy:
                shutil.copy2(source, target)
            else:
                target.symlink_to(source.resolve())
        counts[split] = len(files)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ktgfast.reproduce.stanford_dogs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    args = p.parse_args(argv)
    try:
        counts = prepare(args.src, args.dst, copy=args.copy)
    except (ValueError, FileNotFoundError) as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    print(f"wrote {args.dst}: train {counts['train']}, test {counts['test']} images "
          f"(ktgfast reproduce ens-dogs --data-root {args.dst})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
