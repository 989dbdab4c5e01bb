"""``birads-calc synth``: valid, deterministic DICOM datasets whose statistics follow the paper and BI-RADS."""

import csv
import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from birads_calc.categories import SIX_CLASS
from birads_calc.cli import main
from birads_calc.data.dicom import read_image
from birads_calc.data.masks import read_mask
from birads_calc.data.synthetic import CANARY_MARKER, CANARY_NAME, generate, sample_dataset
from birads_calc.data.synthetic.phantom import power_law_noise, render_image
from birads_calc.data.synthetic.writer import write_dicom

# Paper Table 2, typed in independently of the generator's constant.
TABLE2 = {"2": 3180, "3": 1751, "4A": 323, "4B": 241, "4C": 778, "5": 902}
SMALL = {"shape": (320, 256), "spacing": 0.25}  # 80 x 64 mm: a small breast, fast to render


def rows_of(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Three patients rendered by two worker processes."""
    out = tmp_path_factory.mktemp("synth") / "a"
    generate(out, patients=3, seed=7, workers=2, **SMALL)
    return out


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ files and determinism


def test_output_passes_check_data(dataset, capsys):
    assert main(["check-data", str(dataset / "manifest.csv")]) == 0, capsys.readouterr()


def test_same_seed_same_bytes_whatever_the_workers(dataset, tmp_path):
    again = tmp_path / "b"
    generate(again, patients=3, seed=7, workers=1, **SMALL)
    first, second = files_of(dataset), files_of(again)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_other_seed_other_data(dataset, tmp_path):
    other = tmp_path / "c"
    generate(other, patients=3, seed=8, workers=1, **SMALL)
    assert (other / "manifest.csv").read_bytes() != (dataset / "manifest.csv").read_bytes()
    image = rows_of(other / "manifest.csv")[0]["image"]
    if (dataset / image).exists():
        assert pydicom.dcmread(other / image).PixelData != pydicom.dcmread(dataset / image).PixelData


def test_manifest_rows_match_files_and_lesion_truth(dataset):
    rows = rows_of(dataset / "manifest.csv")
    truth = {r["lesion_id"]: r for r in rows_of(dataset / "lesions.csv")}
    assert rows and all((dataset / r["image"]).is_file() and (dataset / r["mask"]).is_file() for r in rows)
    assert len({r["lesion_id"] for r in rows}) == len(rows)
    drawn = [lid for lid, t in truth.items() if t["drawn"] == "1"]
    assert sorted(drawn) == sorted(r["lesion_id"] for r in rows)
    for r in rows:
        t = truth[r["lesion_id"]]
        assert r["birads"] == t["birads"] and r["birads"] in SIX_CLASS
        expected = ("malignant" if t["malignant_truth"] == "1" else "benign") if t["biopsied"] == "1" else ""
        assert r["pathology"] == expected
        assert r["split"] == ""


def test_interrupted_run_leaves_no_manifest(tmp_path, monkeypatch):
    import birads_calc.data.synthetic.writer as writer

    calls, original = [], writer.write_mask

    def failing_write_mask(path, mask):  # the user presses Ctrl-C while the third mask is written
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(path, mask)

    monkeypatch.setattr(writer, "write_mask", failing_write_mask)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "d", patients=3, seed=7, workers=1, **SMALL)
    assert not (tmp_path / "d" / "manifest.csv").exists()
    assert not list((tmp_path / "d").rglob("*.partial*"))  # no half-written file left behind


def test_refuses_to_overwrite_and_too_small_images(dataset, tmp_path, capsys):
    assert main(["synth", "--out", str(dataset), "--patients", "1"]) == 2
    assert "already exists" in capsys.readouterr().err  # errors on stderr, never mixed into results
    assert main(["synth", "--out", str(tmp_path / "e"), "--image_size", "64", "64"]) == 2
    assert "--image_size 64 64" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_four_class_scale_merges_category_4(tmp_path, capsys):
    out = tmp_path / "four"
    assert main(["synth", "--out", str(out), "--patients", "6", "--workers", "1", "--num_classes", "4",
                 "--image_size", "320", "256", "--pixel_spacing", "0.25"]) == 0  # fmt: skip
    labels = {r["birads"] for r in rows_of(out / "manifest.csv")}
    assert labels <= {"2", "3", "4", "5"} and labels & {"4"}
    assert main(["check-data", str(out / "manifest.csv"), "--num_classes", "4"]) == 0


# ------------------------------------------------------------------ DICOM content and privacy


def test_dicoms_decode_with_project_reader_and_pydicom(dataset):
    for image in sorted({r["image"] for r in rows_of(dataset / "manifest.csv")}):
        ds = pydicom.dcmread(dataset / image)
        assert ds.Modality == "MG" and ds.BitsAllocated == 16 and ds.BitsStored in (12, 14)
        assert ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2")
        assert ds.ImageLaterality in ("L", "R") and ds.ViewPosition in ("CC", "MLO")
        assert [float(v) for v in ds.PixelSpacing] == [0.25, 0.25] == [float(v) for v in ds.ImagerPixelSpacing]
        stored = ds.pixel_array
        assert stored.shape == (320, 256) and stored.max() <= 2**ds.BitsStored - 1
        decoded = read_image(dataset / image)
        assert decoded.pixels.shape == (320, 256) and decoded.pixel_spacing == (0.25, 0.25)
        assert decoded.pixels.min() >= 0 and decoded.pixels.max() <= 1


def test_monochrome1_is_stored_inverted_and_reads_like_monochrome2(tmp_path):
    spec = dataclasses.replace(sample_dataset(1, np.random.default_rng(3))[0], bits_stored=12)
    rendered = render_image(spec, (320, 256), 0.25, np.random.default_rng(0))
    paths = {}
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        variant = dataclasses.replace(spec, photometric=photometric)
        paths[photometric] = write_dicom(tmp_path / f"{photometric}.dcm", rendered.pixels, variant, 0.25, 0)
    one, two = (pydicom.dcmread(paths[p]) for p in ("MONOCHROME1", "MONOCHROME2"))
    np.testing.assert_array_equal(one.pixel_array.astype(int), 4095 - two.pixel_array.astype(int))
    read_one, read_two = read_image(paths["MONOCHROME1"]).pixels, read_image(paths["MONOCHROME2"]).pixels
    np.testing.assert_allclose(read_one, read_two, atol=2 / float(two.WindowWidth))
    for mask in rendered.masks:
        if mask is not None:  # a calcification is brighter than the tissue around it after reading MONOCHROME1
            ring = ndimage.binary_dilation(mask, iterations=4) & ~mask
            assert read_one[mask].max() > np.percentile(read_one[ring], 90)


def test_canary_in_dicom_but_not_in_any_output_text(dataset, capsys, tmp_path):
    image = rows_of(dataset / "manifest.csv")[0]["image"]
    ds = pydicom.dcmread(dataset / image)
    assert str(ds.PatientName) == CANARY_NAME and CANARY_MARKER in ds.PatientID and CANARY_MARKER in ds.AccessionNumber
    assert ds.PatientBirthDate
    for text_file in ("manifest.csv", "lesions.csv"):
        text = (dataset / text_file).read_text()
        assert CANARY_MARKER not in text and "CANARY" not in text and ds.PatientBirthDate not in text
    assert main(["synth", "--out", str(tmp_path / "f"), "--patients", "1", "--workers", "1",
                 "--image_size", "320", "256", "--pixel_spacing", "0.25"]) == 0  # fmt: skip
    printed = capsys.readouterr()
    assert CANARY_MARKER not in printed.out + printed.err


# ------------------------------------------------------------------ masks and images


def test_masks_lie_inside_the_breast_cover_bright_specks_and_do_not_overlap(dataset):
    rows = rows_of(dataset / "manifest.csv")
    by_image: dict[str, list[np.ndarray]] = {}
    brighter = []
    for r in rows:
        pixels = read_image(dataset / r["image"]).pixels
        mask = read_mask(dataset / r["mask"])
        assert mask.shape == pixels.shape and mask.any()
        breast = ndimage.binary_erosion(pixels > 0.05, iterations=2)  # well inside the skin line
        assert breast[mask].all(), r["lesion_id"]
        ring = ndimage.binary_dilation(mask, iterations=4) & ~mask
        brighter.append(pixels[mask].max() > np.median(pixels[ring]))
        for other in by_image.setdefault(r["image"], []):
            assert not (mask & other).any(), r["lesion_id"]
        by_image[r["image"]].append(mask)
    assert np.mean(brighter) >= 0.95


def test_several_lesions_per_image_some_within_one_window(dataset):
    rows = rows_of(dataset / "manifest.csv")
    centres: dict[str, list[np.ndarray]] = {}
    for r in rows:
        centres.setdefault(r["image"], []).append(np.argwhere(read_mask(dataset / r["mask"])).mean(axis=0) * 0.25)
    assert max(len(c) for c in centres.values()) >= 3
    gaps = [np.hypot(*(a - b)) for c in centres.values() for i, a in enumerate(c) for b in c[:i]]
    assert min(gaps) < 20  # mm: two lesions share a 400-px window at 0.07-0.1 mm/px (28-40 mm)


def test_power_law_texture_has_slope_beta():
    field = power_law_noise((512, 512), 0.1, np.random.default_rng(0), beta=3.0)
    spectrum = np.abs(np.fft.fft2(field)) ** 2
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(512, 0.1), np.fft.fftfreq(512, 0.1), indexing="ij"))
    band = (freq > 0.2) & (freq < 3.0)  # well above the 0.01 cycles/mm flattening, below Nyquist (5)
    slope = np.polyfit(np.log(freq[band]), np.log(spectrum[band]), 1)[0]
    assert slope == pytest.approx(-3.0, abs=0.1)
    assert abs(field.mean()) < 1e-4 and field.std() == pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------ metadata statistics (thousands of draws)


@pytest.fixture(scope="module")
def lesions():
    images = sample_dataset(2000, np.random.default_rng(123))
    return images, [lesion for image in images for lesion in image.lesions]


def test_class_frequencies_follow_table2(lesions):
    _, all_lesions = lesions
    counts = Counter(SIX_CLASS[lesion.class_index] for lesion in all_lesions)
    total = sum(TABLE2.values())
    for name, paper in TABLE2.items():
        expected = paper / total
        assert counts[name] / len(all_lesions) == pytest.approx(expected, abs=max(0.01, 0.1 * expected)), name


def test_images_per_patient_and_lesions_per_image_like_the_paper(lesions):
    images, all_lesions = lesions
    assert len(images) / 2000 == pytest.approx(1776 / 708, abs=0.1)
    assert len(all_lesions) / len(images) == pytest.approx(7175 / 1776, abs=0.15)
    assert min(len(image.lesions) for image in images) >= 1
    assert {image.photometric for image in images} == {"MONOCHROME1", "MONOCHROME2"}
    assert {image.bits_stored for image in images} == {12, 14}


def test_malignancy_rates_within_birads_ranges(lesions):
    _, all_lesions = lesions
    ranges = {"2": (0.0, 0.005), "3": (0.0, 0.02), "4A": (0.02, 0.10), "4B": (0.10, 0.50), "4C": (0.50, 0.95),
              "5": (0.95, 1.0)}  # fmt: skip
    for index, name in enumerate(SIX_CLASS):
        group = [lesion for lesion in all_lesions if lesion.class_index == index]
        rate = np.mean([lesion.malignant for lesion in group])
        low, high = ranges[name]
        assert low <= rate <= high, (name, rate)


def test_malignancy_rises_with_latent_suspicion_inside_a_category(lesions):
    _, all_lesions = lesions
    group = [lesion for lesion in all_lesions if SIX_CLASS[lesion.class_index] == "4B"]
    malignant = np.mean([lesion.suspicion for lesion in group if lesion.malignant])
    benign = np.mean([lesion.suspicion for lesion in group if not lesion.malignant])
    assert malignant > benign + 0.01


def test_pathology_unknown_where_no_biopsy_is_done(lesions):
    _, all_lesions = lesions
    for index, name in enumerate(SIX_CLASS):
        group = [lesion for lesion in all_lesions if lesion.class_index == index]
        unknown = np.mean([lesion.pathology == "" for lesion in group])
        if name in ("2", "3"):
            assert unknown > 0.85, name
        else:
            assert unknown == 0.0, name
    assert {lesion.pathology for lesion in all_lesions} == {"", "benign", "malignant"}


def test_morphology_follows_the_lexicon_and_neighbours_overlap(lesions):
    _, all_lesions = lesions

    def most_common(name):
        return Counter(lesion.morphology for lesion in all_lesions if SIX_CLASS[lesion.class_index] == name)

    benign = {"coarse_popcorn", "rim", "vascular", "large_rod_like", "round", "punctate"}
    assert sum(v for k, v in most_common("2").items() if k in benign) / sum(most_common("2").values()) > 0.95
    assert most_common("3").most_common(1)[0][0] in {"round", "punctate"}
    assert most_common("4A").most_common(1)[0][0] in {"amorphous", "coarse_heterogeneous"}
    assert most_common("4B").most_common(1)[0][0] in {"amorphous", "coarse_heterogeneous"}
    assert most_common("4C").most_common(1)[0][0] == "fine_pleomorphic"
    assert most_common("5").most_common(1)[0][0] == "fine_linear_branching"
    fives = [lesion.distribution for lesion in all_lesions if SIX_CLASS[lesion.class_index] == "5"]
    assert np.mean([d in ("linear", "segmental") for d in fives]) > 0.5
    # Neighbouring categories overlap: a share of 4A lesions has the latent value of a 3 or a 4B.
    band = np.array([int(lesion.suspicion * 6 - 1e-9) for lesion in all_lesions if lesion.class_index == 2])
    assert 0.05 < np.mean(band != 2) < 0.4


def test_paper_coverage_gives_every_lesion_its_true_pathology(dataset, tmp_path, capsys):
    """``--pathology paper``: same images and labels as ``clinical``, a pathology on every row from the truth."""
    paper = tmp_path / "paper"
    argv = ["synth", "--out", str(paper), "--patients", "3", "--seed", "7", "--workers", "1", "--pathology", "paper"]
    assert main([*argv, "--image_size", "320", "256", "--pixel_spacing", "0.25"]) == 0
    clinical_rows, paper_rows = rows_of(dataset / "manifest.csv"), rows_of(paper / "manifest.csv")
    truth = {row["lesion_id"]: row["malignant_truth"] for row in rows_of(paper / "lesions.csv")}
    assert [{**r, "pathology": ""} for r in paper_rows] == [{**r, "pathology": ""} for r in clinical_rows]
    assert all(row["pathology"] == ("malignant" if truth[row["lesion_id"]] == "1" else "benign") for row in paper_rows)
    assert any(row["pathology"] == "" for row in clinical_rows)  # the clinical default leaves unbiopsied ones empty
    known = [(c["pathology"], p["pathology"]) for c, p in zip(clinical_rows, paper_rows, strict=True) if c["pathology"]]
    assert all(c == p for c, p in known)  # where clinical reports one, it is the same
    assert (paper / "images").is_dir() and files_of(paper / "images") == files_of(dataset / "images")
