"""BiradsDataModule: patient splits, samples per split, batches equal to the NumPy reference, labels, bad rows."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from birads_calc.data.datamodule import BiradsDataModule, split_by_patient, to_model_batch
from birads_calc.data.dicom import read_image
from birads_calc.data.manifest import ManifestError, read_manifest
from birads_calc.data.masks import read_mask
from birads_calc.data.roi import attention_roi, bounding_box, centred_window, crop, grid_windows
from tests.factories import make_tiny_dataset, write_dicom, write_manifest, write_mask

SMALL = {"window": 64, "stride": 16, "batch_size": 8, "num_workers": 0}


def data_module(manifest, **kwargs) -> BiradsDataModule:
    dm = BiradsDataModule(manifest, **{**SMALL, **kwargs})
    dm.prepare_data()
    return dm


def test_split_by_patient_without_leakage(tmp_path):
    lesions = read_manifest(make_tiny_dataset(tmp_path, patients=10, images_per_patient=2, size=64), check_files=False)
    splits = split_by_patient(lesions, (3, 1, 1), seed=0)
    patients = {name: {lesions[i].patient_id for i in positions} for name, positions in splits.items()}
    assert [len(patients[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not patients[a] & patients[b]
    assert sorted(i for p in splits.values() for i in p) == list(range(len(lesions)))  # every lesion, once
    assert split_by_patient(lesions, (3, 1, 1), seed=0) == splits
    assert split_by_patient(lesions, (3, 1, 1), seed=1) != splits


def test_split_column_overrides_the_random_split(tmp_path):
    manifest = make_tiny_dataset(tmp_path, patients=3, size=64)
    text = manifest.read_text().splitlines()
    rows = [line.rstrip(",") + "," + ("train" if "P000" in line else "val" if "P001" in line else "test")
            for line in text[1:]]  # fmt: skip
    manifest.write_text("\n".join([text[0], *rows]) + "\n")
    lesions = read_manifest(manifest)
    splits = split_by_patient(lesions, seed=5)
    assert {lesions[i].patient_id for i in splits["val"]} == {"P001"}
    assert {lesions[i].patient_id for i in splits["test"]} == {"P002"}


def test_roi_channels_equal_hand_computed_products(tmp_path):
    """A 32x32 image with two lesions: every channel of both centred windows, computed by hand."""
    stored = np.arange(32 * 32).reshape(32, 32) % 4096
    write_dicom(tmp_path / "img.dcm", stored, bits_stored=12)
    first, second = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    first[10:12, 10:13] = True  # box (10, 10, 12, 13): centred 16x16 window at (3, 3)
    second[14:16, 20:22] = True  # box (14, 20, 16, 22): centred window at (7, 13)
    write_mask(tmp_path / "m1.png", first)
    write_mask(tmp_path / "m2.png", second)
    rows = [{"patient_id": "P", "image": "img.dcm", "mask": f"m{i}.png", "birads": b} for i, b in ((1, "3"), (2, "5"))]
    dm = data_module(write_manifest(tmp_path / "manifest.csv", rows), window=16, stride=8)
    dm.setup("predict")
    batch = to_model_batch(next(iter(dm.predict_dataloader())))
    x = stored / 4095.0
    for k, (mask, (top, left)) in enumerate(((first, (3, 3)), (second, (7, 13)))):
        window = (slice(top, top + 16), slice(left, left + 16))
        image = batch["image"][k].numpy()
        np.testing.assert_allclose(image[0], x[window], atol=1e-5)
        np.testing.assert_allclose(image[1], x[window] * (first | second)[window], atol=1e-5)
        np.testing.assert_allclose(image[2], x[window] * mask[window], atol=1e-5)
        assert image[2].any() and (image[1] >= image[2]).all()
    assert batch["target"].tolist() == [1, 5] and batch["index"].tolist() == [0, 1]
    dm_gray = data_module(tmp_path / "manifest.csv", window=16, stride=8, attention=False)
    dm_gray.setup("predict")
    gray = dm_gray.on_after_batch_transfer(next(iter(dm_gray.predict_dataloader())), 0)["image"]
    torch.testing.assert_close(gray, batch["image"][:, :1].expand(-1, 3, -1, -1))


def test_batches_equal_the_decode_per_sample_reference(tmp_path):
    manifest = make_tiny_dataset(tmp_path, patients=5, size=256)
    dm = data_module(manifest)
    dm.setup("fit")
    lesions = dm.lesions
    decoded = {x.image: read_image(x.image).pixels for x in lesions}
    masks = {x.row: read_mask(x.mask) for x in lesions}

    def reference(position: int, top: int, left: int) -> np.ndarray:
        lesion = lesions[position]
        box = (top, left, top + 64, left + 64)
        union = np.logical_or.reduce([masks[y.row] for y in lesions if y.image == lesion.image])
        return attention_roi(crop(decoded[lesion.image], box), crop(union, box), crop(masks[lesion.row], box))

    # training: every grid window of every training lesion, once
    expected = {
        (p, *w)
        for p in dm.splits["train"]
        for w in grid_windows(bounding_box(masks[lesions[p].row]), (256, 256), 64, 16)
    }
    train = dm.datasets["train"]
    assert {(int(p), int(t), int(c)) for p, _, t, c in train.samples} == expected and len(train) == len(expected)
    for i in range(0, len(train), max(1, len(train) // 10)):
        item = train[i]
        position, _, top, left = (int(v) for v in train.samples[i])
        image = to_model_batch({k: v.unsqueeze(0) for k, v in item.items()})["image"][0].numpy()
        np.testing.assert_allclose(image, reference(position, top, left), atol=1 / 65535)
    # validation: one centred window per lesion, in split order
    batch = to_model_batch(next(iter(dm.val_dataloader())))
    for image, position in zip(batch["image"], batch["index"].tolist(), strict=True):
        top, left = centred_window(bounding_box(masks[lesions[position].row]), 64)
        np.testing.assert_allclose(image.numpy(), reference(position, top, left), atol=1 / 65535)
        assert batch["target"].dtype == torch.int64 and batch["malignancy"].dtype == torch.float32


def test_augmentation_only_while_training(tmp_path):
    dm = data_module(make_tiny_dataset(tmp_path, patients=5, size=128))
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    plain = to_model_batch(batch)["image"]
    dm.trainer = SimpleNamespace(training=False)
    torch.testing.assert_close(dm.on_after_batch_transfer(batch, 0)["image"], plain)
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    assert not torch.equal(dm.on_after_batch_transfer(batch, 0)["image"], plain)
    train = next(iter(dm.train_dataloader()))
    assert set(train) == {"pixels", "masks", "target", "malignancy", "index"}
    assert train["pixels"].dtype == torch.uint16 and train["masks"].dtype == torch.uint8


def test_labels_needed_for_fit_not_for_predict(tmp_path):
    manifest = make_tiny_dataset(tmp_path, patients=3, size=64, labels=False)
    dm = data_module(manifest)
    dm.setup("predict")
    batch = to_model_batch(next(iter(dm.predict_dataloader())))
    assert batch["target"].tolist() == [-1] * 6 and batch["index"].tolist() == list(range(6))
    with pytest.raises(ManifestError, match="missing BI-RADS label"):
        dm.setup("fit")


def test_bad_rows_refused_or_skipped(tmp_path):
    manifest = make_tiny_dataset(tmp_path, patients=5, size=64)
    read_manifest(manifest)[3].mask.unlink()
    with pytest.raises(ManifestError, match=r"row 4 \(line 5\), column 'mask'"):
        data_module(manifest)
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        dm = data_module(manifest, skip_bad_rows=True)
        dm.setup("predict")
    assert [x.row for x in dm.lesions] == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert len(dm.datasets["predict"]) == 9
