"""Every bad input a hospital export or a public download can hold, through every entry point (issue #10).

Each case of ``tests/bad_inputs_corpus.py`` goes through the file reader (``read_image`` / ``read_mask``, where a
file is at fault), ``read_manifest``, ``birads-calc check-data``, ``birads-calc prepare`` and
``BiradsDataModule.prepare_data`` + ``setup("fit")``. A bad input must give a clear error that names the row
(where there is one), the file and the cause; the command line must print it and exit non-zero, never raise or
show a traceback. A valid oddity must be read correctly (values checked against hand-computed ones) with every
row kept. With ``skip_bad_rows`` the bad row is left out and named in the warning, never dropped silently.

| case | input | outcome |
|---|---|---|
| truncated_dicom | DICOM cut short (copy interrupted) | error: truncated |
| not_a_dicom | text file named .dcm | error: not a DICOM |
| zero_byte_dicom | zero-byte .dcm | error: not a DICOM |
| multi_frame | 3-frame DICOM (tomosynthesis) | error: multi-frame ... not supported |
| no_pixel_data | DICOM without PixelData | error: no PixelData |
| rows_exceed_pixels | Rows larger than the pixel data holds | error: truncated, pixel data needs N bytes |
| columns_disagree | Columns smaller than the pixel data | error: header does not describe the pixels |
| window_centre_decimal_comma | WindowCenter "8412,2" | error: WindowCenter is not a number (check-data too) |
| colour_png_image | RGB PNG as the mammogram | error: colour image |
| nan_tiff / inf_tiff | float TIFF holding NaN / +inf | error: non-finite (check-data included) |
| image_missing / image_is_folder | image absent / a folder | error: file not found / is a folder |
| eight_bit_dicom | 8-bit DICOM | valid: stored / 255, cached pixel checked |
| signed_16_bit_dicom | PixelRepresentation 1 | valid: (v + 32768) / 65535, cached pixel checked |
| no_pixel_spacing | no PixelSpacing / ImagerPixelSpacing | valid: spacing None, native pixels |
| no_pixel_spacing_resample | same, with pixel_spacing_mm set | error in prepare/data module only |
| float_tiff_unit_range / png16_image | float TIFF in [0, 1] / 16-bit PNG | valid: values checked |
| mask_other_size / empty_mask | 32x32 mask on 64x64 / all zero | error: mask is 32x32 ... / mask is empty |
| grey_mask / mask_without_zero / label_map_mask | 0/128/255, 100/255, 0/1/2 | error: not binary |
| rgb_overlay_mask | red-on-black RGB overlay | error: 2-D single-channel |
| mask_missing / mask_is_folder | mask absent / a folder | error: file not found / directory |
| mask_zero_one / mask_grey_as_rgb | 0/1 PNG / binary saved as RGB | valid: mask equals the planted one |
| label_0 / label_1 / label_6 / label_4_six_class | BI-RADS 0, 1, 6, "4" | error naming the value and why |
| label_garbage / label_missing | "suspicious" / empty | error (empty is fine for prepare only) |
| label_4a_mixed_case | " bi-rads 4a " | valid: class 4A |
| duplicate_row / path_escapes | row 3 = row 1 / ../outside.dcm | error: duplicate of row 1 / escapes |
| patient_in_two_splits / unknown_split | train and test / "validation" | error naming both rows / unknown split |
| unknown_pathology / empty_patient_id / too_many_cells | "maybe" / "" / unquoted comma | error with row |
| too_few_cells | a row of 4 cells under a 9-column header | error: 5 cell(s) fewer than the header, naming them |
| absolute_paths | absolute image and mask | valid |
| header_only / zero_byte_manifest | no rows / empty file | error: no data rows / missing required column |
| missing_column / semicolon_csv / column_twice | no mask column / ';' export / birads twice | error |
| manifest_is_folder / manifest_missing | folder / typo | error: is a folder / not found |
| latin1_manifest / xlsx_as_csv / nul_bytes | Latin-1 / workbook / NUL bytes | error: line 2 not UTF-8 / ... |
| excel_flavoured | BOM, CRLF, "Patient_ID " headers, blank row | valid |
| ct_slice / dx_chest / rg_breast | Modality CT / DX of the CHEST / RG of the BREAST | error (modality) / valid |
| blank_dicom / constant_png | every pixel one value | error where pixels are decoded: blank image (size, value) |
| zero_spacing / absurd_spacing | PixelSpacing 0 / 85 | error: zero pixel spacing / outside 0.01-2 mm |
| resample_to_huge | 2 mm header resampled to 0.01 mm | error in prepare/data module: more than 134 Mpx |
| image_fifo / image_dev_null / image_symlink_loop | FIFO / /dev/null / link loop as image | error naming what it is |
| mask_fifo / mask_symlink_loop | FIFO / link loop as mask | error naming what it is |
| image_of_two_patients / image_copy_of_two_patients | A's image under C / A's pixels as C's | error on both rows |
| utf16_manifest / manifest_fifo / manifest_dev_null / manifest_symlink_loop | UTF-16 / FIFO / device / loop | error |
| formula_cells | '=HYPERLINK(...)', '@C', '-CC' written by write_csv | valid: read back as written |

The trainer commands and ``prepare`` get the corpus too (``COMMAND_CASES``, issue #16): manifest cases above given
to ``fit``/``validate``/``test``/``predict``, invalid hyperparameters, bad ``--ckpt_path`` files, a ``test`` or
``predict`` before any ``fit``, and output folders that cannot be made; each must exit 2 with one message naming
the option, file or row and no traceback (``test_command_fails_cleanly``); every case of the table, not only that
sample, also goes through ``fit``, ``test`` and ``predict`` (``test_every_file_case_through_fit_test_and_predict``).
Issue 23 adds 59 command cases
(``ISSUE_23_COMMANDS``: check-data, prepare, synth, convert, fit, validate, test, predict) whose builds also return
a check: nothing overwritten or half-written, and for the once-silent cases the refusal or the warning.

Counts (asserted by ``test_counts`` from the outcomes, :data:`COUNTS`): 78 bad inputs tried, 65 handled with a
clear error, 13 handled correctly as valid, 0 crashes. Every case's outputs (messages, cache files) are also
searched for the canary identity the corpus DICOMs carry: none found.
"""

from __future__ import annotations

import errno
import re
import warnings
from pathlib import Path

import pytest

from birads_calc.cli import main as cli
from birads_calc.data.datamodule import BiradsDataModule
from birads_calc.data.dicom import ImageReadError, read_image
from birads_calc.data.manifest import ManifestError, SkippedRowsWarning, read_manifest
from birads_calc.data.masks import MaskError, read_mask
from tests.bad_inputs_corpus import (
    CASES,
    COMMAND_CASES,
    CPU_TINY,
    ENTRY_POINTS,
    STRIDE,
    WINDOW,
    Built,
    Case,
    CommandCase,
    Trained,
    corpus_command,
)
from tests.factories import CANARY_NAME, make_tiny_dataset
from tests.privacy import find_leaks
from tests.training_helpers import TINY_OVERRIDES, single_torch_thread  # noqa: F401 (autouse)

# bad inputs tried, handled with a clear error, handled correctly as valid, crashes
COUNTS = {"tried": 78, "clear_error": 65, "valid": 13, "crashes": 0}

# the identity tests/factories.py writes into every DICOM (name in both spellings, birth date, accession number)
CANARY = {CANARY_NAME, CANARY_NAME.replace("^", " "), "19700101", "ACC-CANARY-1"}

_outcomes: dict[str, dict[str, str]] = {}  # case -> entry point -> outcome, filled as the cases run


def _text_ok(built: Built, text: str, entry: str) -> str | None:
    """None when ``text`` names the row (not for a file reader), the file and every fragment; else what lacks."""
    missing = [f for f in built.fragments if f not in text]
    if built.row is not None and entry != "reader" and not re.search(rf"\brow {built.row}\b", text):
        missing.append(f"row {built.row}")
    if built.file is not None and str(built.file) not in text:
        missing.append(str(built.file))
    if "Traceback" in text:
        missing.append("no traceback")
    return f"message lacks {missing}: {text!r}" if missing else None


def _library(built: Built, entry: str, call, error_type: type[Exception], check=None, texts=None) -> str:
    """Run a library entry point; 'error'/'valid' when it behaved as expected, else a description."""
    try:
        result = call()
    except error_type as error:
        texts.append(str(error))
        if not built.expects_error(entry):
            return f"wrong: valid input refused: {error}"
        return _text_ok(built, str(error), entry) or "error"
    except Exception as error:  # anything else escaping is a crash
        return f"crash: {type(error).__name__}: {error}"
    if built.expects_error(entry):
        return "wrong: bad input accepted"
    if check is not None:
        try:
            check(result)
        except AssertionError as failure:
            return f"wrong: valid input read incorrectly: {failure}"
    return "valid"


def _command(built: Built, entry: str, args: list[str], capsys, texts: list, expect: str | None = None) -> str:
    capsys.readouterr()
    try:
        code = cli(args)
    except BaseException as error:  # the program must print and return, never raise (SystemExit included)
        return f"crash: {type(error).__name__}: {error}"
    captured = capsys.readouterr()
    text = captured.out + captured.err
    texts.append(text)
    if "Traceback" in text:
        return f"crash: traceback printed: {text}"
    if built.expects_error(entry):
        if code == 0:
            return f"wrong: exit 0 for a bad input: {text}"
        return _text_ok(built, text, entry) or "error"
    if code != 0:
        return f"wrong: exit {code} for a valid input: {text}"
    if expect and expect not in text:
        return f"wrong: {expect!r} not in {text!r}"
    return "valid"


def run_case(case: Case, root: Path, capsys) -> dict[str, str]:
    """The outcome of ``case`` at every entry point, plus ``"privacy"``: whether any output or written file holds
    the factories' canary identity (the corpus DICOMs carry it)."""
    built = case.build(root)
    outcomes, texts = {}, []
    if built.reader:
        reader, error = (read_image, ImageReadError) if built.reader == "image" else (read_mask, MaskError)
        check = built.check.get(built.reader)
        outcomes["reader"] = _library(built, "reader", lambda: reader(built.file), error, check, texts)

    def lesions_check(lesions):
        assert len(lesions) == built.rows, f"{len(lesions)} lesions for {built.rows} rows"
        if "lesions" in built.check:
            built.check["lesions"](lesions)

    def read():
        return read_manifest(built.manifest)

    outcomes["read_manifest"] = _library(built, "read_manifest", read, ManifestError, lesions_check, texts)
    outcomes["check-data"] = _command(built, "check-data", ["check-data", str(built.manifest)], capsys, texts)
    options = [f"--{k}={v}" for k, v in built.options.items()]
    prepare = ["prepare", str(built.manifest), f"--window={WINDOW}", f"--stride={STRIDE}", *options]
    prepare.append(f"--cache_dir={root / 'cache_cli'}")
    outcomes["prepare"] = _command(built, "prepare", prepare, capsys, texts, expect=f": {built.rows} lesions")

    def data_module():
        module = BiradsDataModule(
            built.manifest,
            window=WINDOW,
            stride=STRIDE,
            num_workers=0,
            batch_size=1,  # one training patient, one lesion: a batch larger than its windows is refused
            split_ratios=(1, 1, 1),  # three patients: one in each split (3:1:1 would leave val empty, refused)
            pin_memory=False,
            cache_dir=root / "cache_dm",
            **built.options,
        )
        module.prepare_data()
        module.setup("fit")
        return module

    def module_check(module):
        assert len(module.lesions) == built.rows == len(module.cache), "a row went missing"
        if "cache" in built.check:
            built.check["cache"](module.cache)

    outcomes["datamodule"] = _library(built, "datamodule", data_module, ManifestError, module_check, texts)
    leaks = find_leaks(CANARY, root, texts, exclude=["images/*"])
    outcomes["privacy"] = f"leak: {leaks}" if leaks else "ok"
    _outcomes[case.name] = outcomes
    return outcomes


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_through_every_entry_point(case, tmp_path, capsys):
    outcomes = run_case(case, tmp_path, capsys)
    built_expectations = {e: o for e, o in outcomes.items() if o not in ("error", "valid", "ok")}
    assert not built_expectations, f"{case.name} ({case.what}): {built_expectations}"


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in CASES
        if c.name
        in {
            "duplicate_row",
            "path_escapes",
            "label_6",
            "grey_mask",
            "truncated_dicom",
            "window_centre_decimal_comma",
            "patient_in_two_splits",
            "mask_other_size",
        }
    ],
    ids=lambda c: c.name,
)
def test_skip_bad_rows_names_every_row_it_leaves_out(case, tmp_path):
    """With skip_bad_rows, kept + reported-skipped = all rows, and the planted row is among those reported."""
    built = case.build(tmp_path)
    with pytest.warns(SkippedRowsWarning) as caught:
        kept = read_manifest(built.manifest, skip_bad_rows=True)
    message = str(caught[0].message)
    skipped = int(re.search(r"skipped (\d+) bad row", message).group(1))
    assert len(kept) + skipped == built.rows
    assert re.search(rf"\brow {built.row}\b", message) and built.row not in {x.row for x in kept}


def test_counts(tmp_path_factory, capsys):
    """Every case run (again only if a -k selection skipped it); the totals are the ones the docs report."""
    for case in CASES:
        if case.name not in _outcomes:
            run_case(case, tmp_path_factory.mktemp(case.name), capsys)
    crashes = sum(any(o.startswith("crash") for o in _outcomes[c.name].values()) for c in CASES)
    errors = valid = 0
    for case in CASES:
        outcomes = {e: o for e, o in _outcomes[case.name].items() if e != "privacy"}
        if all(o == "valid" for o in outcomes.values()):
            valid += 1
        elif all(o in ("error", "valid") for o in outcomes.values()) and "error" in outcomes.values():
            errors += 1
    found = {"tried": len(CASES), "clear_error": errors, "valid": valid, "crashes": crashes}
    odd = {
        c.name: _outcomes[c.name]
        for c in CASES
        if any(o not in ("error", "valid", "ok") for o in _outcomes[c.name].values())
    }
    with capsys.disabled():
        print(f"\nbad-input corpus: {found}")
    assert found == COUNTS, odd
    assert set().union(*(o.keys() for o in _outcomes.values())) == {*ENTRY_POINTS, "privacy"}
    assert all(_outcomes[c.name]["privacy"] == "ok" for c in CASES)


# -- the trainer commands and prepare (COMMAND_CASES) ------------------------------------------------------------
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "proposed.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """One tiny fit of configs/proposed.yaml on the CPU: the checkpoint the test/predict cases are given."""
    root = tmp_path_factory.mktemp("trained")
    manifest = make_tiny_dataset(root / "data", patients=6, size=96)
    runs = root / "runs"
    args = ["fit", "--config", str(CONFIG), "--data.manifest", str(manifest), "--runs_root", str(runs)]
    assert cli([*args, *TINY_OVERRIDES, *CPU_TINY]) == 0
    return Trained(CONFIG, manifest, runs, runs / "proposed" / "version_0" / "checkpoints" / "best.ckpt")


def run_command(args: list[str], capsys) -> tuple[int, str]:
    """The exit code and printed text of ``birads-calc args`` (a parser's exit counts as its exit code); the
    warnings it gave are appended, as a user sees them on stderr (pytest would otherwise keep them)."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = cli(args)
        except SystemExit as exit_:  # the command-line parser exits with usage and its message (code 2)
            code = exit_.code
    captured = capsys.readouterr()
    shown = "".join(f"\n{w.category.__name__}: {w.message}" for w in caught)
    return code, captured.out + captured.err + shown


@pytest.mark.parametrize("case", COMMAND_CASES, ids=[c.name for c in COMMAND_CASES])
def test_command_fails_cleanly(case: CommandCase, trained, tmp_path, capsys, monkeypatch):
    """No traceback, the case's exit code, and one message naming the culprit (option, file, row)."""
    monkeypatch.delenv("BIRADS_CALC_DEBUG", raising=False)
    args, words, *check = case.build(tmp_path, trained)
    assert args[0] == case.command
    code, text = run_command(args, capsys)
    assert "Traceback" not in text, text
    assert code == case.code, text
    missing = [w for w in words if w not in text]
    assert not missing, f"message lacks {missing}: {text}"
    if check and check[0] is not None:
        check[0](text)  # nothing overwritten or half-written; for a once-silent case, its output


def test_command_corpus_covers_every_command():
    commands = {c.command for c in COMMAND_CASES}
    assert len(COMMAND_CASES) >= 30 and commands >= {"fit", "validate", "test", "predict", "prepare"}


def test_ctrl_c_during_fit_says_where_last_ckpt_is_and_how_to_resume(trained, tmp_path, capsys, monkeypatch):
    """Ctrl-C in the second epoch: exit 130, the message names last.ckpt (written after epoch 1) and --ckpt_path."""
    from birads_calc.training.model import BiradsClassifier

    step = BiradsClassifier.training_step

    def interrupted_in_epoch_2(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(BiradsClassifier, "training_step", interrupted_in_epoch_2)
    runs = tmp_path / "runs"
    base = ["fit", "--config", str(CONFIG), "--data.manifest", str(trained.manifest), "--runs_root", str(runs)]
    code, text = run_command([*base, *TINY_OVERRIDES, *CPU_TINY, "--trainer.max_epochs", "2"], capsys)
    last = runs / "proposed" / "version_0" / "checkpoints" / "last.ckpt"
    assert code == 130 and "Traceback" not in text, text
    assert f"the last finished epoch is in {last}" in text and f"--ckpt_path {last}" in text, text
    assert last.is_file()


def test_a_window_smaller_than_the_lesions_is_warned_with_the_numbers(tmp_path):
    """The corpus lesions are discs of radius 4 (9 x 9 px): a 6 px window cuts every one, and the warning says how
    many, the largest, and the window that would hold them all."""
    from birads_calc.data.cache import CacheSettings, LesionSizeWarning, ensure_cache
    from tests.bad_inputs_corpus import good_rows
    from tests.factories import write_manifest

    manifest = write_manifest(tmp_path / "manifest.csv", good_rows(tmp_path))
    with pytest.warns(LesionSizeWarning) as caught:
        ensure_cache(manifest, CacheSettings(window=6, stride=6), tmp_path / "cache")
    message = str(caught[0].message)
    assert "2 of 2 lesion(s) are larger than the 6 px window" in message and "largest: 9 x 9 px, row 1" in message
    assert "a window of at least 9 px holds every lesion" in message


@pytest.mark.parametrize("failure", ["disk full", "ctrl-c"])
def test_convert_that_fails_halfway_leaves_the_previous_set_whole(failure, tmp_path, capsys, monkeypatch):
    """convert --overwrite that stops after writing its first mask (a full disk, Ctrl-C): the previous manifest,
    not-converted list and masks are left byte for byte, no staging folder remains, and nothing new is published."""
    from birads_calc.data.adapters import mias
    from tests.bad_inputs_corpus import _mias_source

    src = _mias_source(tmp_path)
    out = tmp_path / "data" / "manifest.csv"
    args = ["convert", "mini-mias", "--src", str(src), "--out", str(out)]
    assert cli(args) == 0
    before = {p: p.read_bytes() for p in out.parent.rglob("*") if p.is_file()}
    assert len(before) == 2  # the manifest and the mask

    def fails_after_writing(path, mask):
        write_mask(path, mask)
        if failure == "ctrl-c":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    write_mask = mias.write_mask
    monkeypatch.setattr(mias, "write_mask", fails_after_writing)
    code, text = run_command([*args, "--overwrite", "true"], capsys)
    assert code == (130 if failure == "ctrl-c" else 1) and "Traceback" not in text, text
    assert {p: p.read_bytes() for p in out.parent.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "mias"]  # no staging folder left beside


def test_issue_23_corpus_covers_every_data_tool_and_trainer_command():
    from tests.bad_inputs_corpus import ISSUE_23_CASES, ISSUE_23_COMMANDS

    per_command = {}
    for case in COMMAND_CASES:
        if case.name in ISSUE_23_COMMANDS:
            per_command[case.command] = per_command.get(case.command, 0) + 1
    assert set(per_command) == {"check-data", "prepare", "synth", "convert", "fit", "validate", "test", "predict"}
    assert len(ISSUE_23_CASES) == 20 and sum(per_command.values()) == len(ISSUE_23_COMMANDS) == 59


@pytest.mark.parametrize("command", ["fit", "test", "predict"])
@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_every_file_case_through_fit_test_and_predict(name, command, trained, tmp_path, capsys, monkeypatch):
    """Every case of the corpus, not a sample, through the commands a user runs on a manifest: no traceback, exit 2,
    and the cause, row and file named. A case valid where the command reads the data (the data module for fit and
    test; prepare, which needs no labels, for predict) is covered by the valid-input checks above."""
    monkeypatch.delenv("BIRADS_CALC_DEBUG", raising=False)
    built, args, words = corpus_command(name, command, tmp_path, trained)
    if not built.expects_error("prepare" if command == "predict" else "datamodule"):
        pytest.skip(f"valid input for {command}")
    code, text = run_command(args, capsys)
    assert "Traceback" not in text, text
    assert code == 2, text
    missing = [w for w in words if w not in text]
    assert not missing, f"message lacks {missing}: {text}"


@pytest.fixture(scope="module")
def detect_background(tmp_path_factory) -> Path:
    """A generated mammogram without calcifications, the one background of a test-sized detect-train."""
    import numpy as np

    from tests.detection_fixtures import SPACING, phantom
    from tests.factories import write_dicom

    pixels, _, _, _ = phantom(clusters=(), seed=10, label=False)
    path = tmp_path_factory.mktemp("background") / "bg.dcm"
    return write_dicom(path, np.round(pixels * 4095), bits_stored=12, pixel_spacing=(SPACING, SPACING))


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_every_file_case_through_detect_train_outlined(name, detect_background, tmp_path, capsys, monkeypatch):
    """``detect-train --outlined`` reads a manifest too (labels optional, as for predict): every error case of the
    corpus exits 2 naming its cause, row and file before anything is written; every valid one trains."""
    monkeypatch.delenv("BIRADS_CALC_DEBUG", raising=False)
    built = next(c for c in CASES if c.name == name).build(tmp_path)
    if built.options:
        pytest.skip("a data-module option (pixel spacing, classes) detect-train does not have")
    out = tmp_path / "ranker.pt"
    code, text = run_command(["detect-train", "--backgrounds", str(detect_background), "--outlined",
                              str(built.manifest), "--passes", "1", "--epochs", "1", "--lesions", "2",
                              "--resolutions", "0.2", "--validation", "0", "--out", str(out)], capsys)  # fmt: skip
    assert "Traceback" not in text, text
    if not built.expects_error("prepare"):
        assert code == 0 and out.is_file(), text
        return
    words = [*built.fragments, *([f"row {built.row}"] if built.row is not None else []), str(built.file)]
    assert code == 2 and not out.exists(), text
    assert not [w for w in words if w not in text], text
