"""Labels of a flat validation folder (ImageNet's own layout) from its ground-truth file.

Three common forms are read, looked for in the data root and in the folder itself; the first
found wins:

- ``LOC_val_solution.csv`` (the Kaggle layout): ``ImageId,PredictionString`` rows whose
  prediction string starts with the image's class (WordNet id);
- ``val.txt``: ``filename label`` lines, the label a class name or a 0-based index into the
  sorted class folders (Caffe's ImageNet list);
- ``ILSVRC2012_validation_ground_truth.txt`` (the devkit): one 1-based ILSVRC2012_ID a line,
  for the images in file-name order; the devkit's ``meta.mat`` (beside it, or in
  ``ILSVRC2012_devkit_t12/data/``) maps the IDs to WordNet ids. Reading it uses scipy.

Every image of the folder needs a label and every label an image; class names are those of the
training split's class folders.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import SpikeguideError

KAGGLE, LIST, DEVKIT = "LOC_val_solution.csv", "val.txt", "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_DATA = Path("ILSVRC2012_devkit_t12") / "data"


def expected_layout(folder: Path) -> str:
    return (f"{folder}/<class>/*.JPEG, or a flat {folder.name}/ with one of {KAGGLE} (Kaggle), "
            f"{LIST} ('filename label' lines) or {DEVKIT} with the devkit's meta.mat, "
            f"in {folder.parent} or {folder}")


def find_ground_truth(folder: Path, root: Path) -> Path | None:
    for name in (KAGGLE, LIST, DEVKIT):
        for place in (root, folder, root / DEVKIT_DATA):
            if (place / name).is_file():
                return place / name
    return None


def flat_labels(folder: Path, root: Path, files: list[str], classes: list[str]
                ) -> tuple[list[int], Path]:
    """The class index of each of ``files`` (names in ``folder``, in natural order), and the
    ground-truth file they come from."""
    source = find_ground_truth(folder, root)
    if source is None:
        raise SpikeguideError(f"imagefolder: {folder} holds images but no class folders and no "
                              f"ground-truth file; expected {expected_layout(folder)}")
    index = {name: i for i, name in enumerate(classes)}
    if source.name == DEVKIT:
        named = dict(zip(files, devkit_classes(source, len(files))))
    elif source.name == KAGGLE:
        named = kaggle_classes(source)
    else:
        named = list_classes(source, classes)
    stems = {Path(f).stem: f for f in files}
    by_file = {stems.get(name, name): label for name, label in named.items()}
    unmatched = sorted(by_file.keys() - set(files))
    if unmatched:
        raise SpikeguideError(f"imagefolder: {source} labels {len(unmatched)} image(s) that "
                              f"{folder} lacks (first: {unmatched[0]}); restore them or use the "
                              "ground truth of this copy")
    labels = []
    for f in files:
        if f not in by_file:
            raise SpikeguideError(f"imagefolder: {source} has no label for {folder / f}")
        if by_file[f] not in index:
            raise SpikeguideError(f"imagefolder: {source} labels {f} as {by_file[f]!r}, which is "
                                  f"not a class folder of the training split")
        labels.append(index[by_file[f]])
    return labels, source


def kaggle_classes(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:2] != ["ImageId", "PredictionString"]:
        raise SpikeguideError(f"imagefolder: {path} does not start with the header "
                              "'ImageId,PredictionString' of Kaggle's LOC_val_solution.csv")
    try:
        return {row[0]: row[1].split()[0] for row in rows[1:] if row}
    except IndexError:
        raise SpikeguideError(f"imagefolder: {path} has a row without a class") from None


def list_classes(path: Path, classes: list[str]) -> dict[str, str]:
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise SpikeguideError(f"imagefolder: {path} line {number} is not 'filename label'")
        name, label = parts
        if label.isdigit():
            if int(label) >= len(classes):
                raise SpikeguideError(f"imagefolder: {path} line {number}: label {label} but the "
                                      f"training split has {len(classes)} classes")
            label = classes[int(label)]
        out[name] = label
    return out


def devkit_classes(path: Path, count: int) -> list[str]:
    ids = [int(line) for line in path.read_text().split()]
    if len(ids) != count:
        raise SpikeguideError(f"imagefolder: {path} has {len(ids)} labels for the {count} images "
                              "of the folder; the devkit's ground truth covers all 50,000 "
                              "validation images")
    wnid = devkit_wnids(path)
    unknown = sorted(set(ids) - wnid.keys())
    if unknown:
        raise SpikeguideError(f"imagefolder: {path} holds ILSVRC2012_ID {unknown[0]}, which the "
                              "devkit's meta.mat does not list as a class")
    return [wnid[i] for i in ids]


def devkit_wnids(ground_truth: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> WordNet id of the 1,000 leaf classes, from the devkit's meta.mat."""
    candidates = [ground_truth.parent / "meta.mat", ground_truth.parent / DEVKIT_DATA / "meta.mat"]
    meta = next((p for p in candidates if p.is_file()), None)
    if meta is None:
        raise SpikeguideError(f"imagefolder: {ground_truth} holds devkit IDs, which the devkit's "
                              f"meta.mat maps to classes; put meta.mat at {candidates[0]}")
    from scipy.io import loadmat  # only this form of the ground truth needs it

    synsets = loadmat(meta, squeeze_me=True)["synsets"]
    return {int(i): str(w) for i, w, children in zip(synsets["ILSVRC2012_ID"], synsets["WNID"],
                                                       synsets["num_children"])
            if int(children) == 0}
