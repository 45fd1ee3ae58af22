"""Writes a data set in the official cifar-100-python/ folder format, to time runs offline.

CIFAR-100 cannot be downloaded on machines without network.  This writes the
built-in synthetic set (50,000 + 10,000 images, 100 classes) as the files of the
extracted official archive (``train``, ``test``, ``meta``: protocol-2 pickles
with byte-string keys, images as uint8[n, 3072] in R, G, B planes), so that
``dataset: cifar100`` runs read, decode and train on data of exactly CIFAR-100's
size and format.

jaxmia checks every file of a cifar-100-python/ folder against the official
sizes and md5s, so it refuses this copy unless JAXMIA_UNVERIFIED_DATA=1 is set;
with it, the run warns once and its data fingerprint says "unverified", so it can
never be taken for, or resumed as, a run on the real CIFAR-100:

    python benchmarks/official_format_copy.py /tmp/fake-data
    JAXMIA_UNVERIFIED_DATA=1 python -m jaxmia.run \
        --config configs/single_point_mia_quick.yaml --data-dir /tmp/fake-data

The label names are CIFAR-100's (the loader checks them), the images are not:
the losses of such a run mean nothing, its timings are those of CIFAR-100.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

from jaxmia.data import CIFAR100_FINE_LABELS, load_dataset


def _batch(name: bytes, images: np.ndarray, labels: np.ndarray) -> bytes:
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    return pickle.dumps(
        {
            b"filenames": [f"synthetic_{i}.png".encode() for i in range(len(images))],
            b"batch_label": name,
            b"fine_labels": labels.astype(int).tolist(),
            b"coarse_labels": (labels // 5).astype(int).tolist(),
            b"data": np.ascontiguousarray(planes),
        },
        protocol=2,
    )


def write_copy(folder: Path, ds) -> None:
    """Writes ``ds``'s uint8[n, 32, 32, 3] images and int[n] labels as train, test, meta."""
    folder.mkdir(parents=True)
    (folder / "train").write_bytes(
        _batch(b"training batch 1 of 1", ds.train_images, ds.train_labels)
    )
    (folder / "test").write_bytes(_batch(b"testing batch 1 of 1", ds.test_images, ds.test_labels))
    # The loader checks the fine label names against the official list.
    meta = {
        b"fine_label_names": [name.encode() for name in CIFAR100_FINE_LABELS],
        b"coarse_label_names": [f"synthetic_super_{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path, help="becomes --data-dir of the runs")
    a = ap.parse_args()
    folder = a.data_dir / "cifar100" / "cifar-100-python"
    if folder.exists():
        sys.exit(f"{folder} exists already; choose an empty data folder")
    write_copy(folder, load_dataset("synthetic", a.data_dir, num_classes=100))
    print(f"wrote {folder}; read it with JAXMIA_UNVERIFIED_DATA=1 (it is not the official data)")


if __name__ == "__main__":
    main()
