"""``birads-calc predict --dicomweb URL --study UID`` / ``--dicom_dir DIR``: rate the calcifications of DICOM
studies and return the results as DICOM (DESIGN §11, docs/clinical.md).

Each study on its own: read it (``pacs`` or ``studies.load_folder_study``: the rated mammograms, the calcification
SEGs, a note per object left out), find its regions (``regions``: its SEGs, the detector with ``--detect`` on the
images they leave uncovered), check the physical scale (the checkpoint's training spacing, see :func:`check_scale`),
rate them with the one-study path (``inference.predict_lesions``), build its SEGs and SR (``results``, and the
Mammography CAD SR with ``--cad_sr``: ``cad_sr``) into ``<predict dir>/dicom/study-N/`` and, from a PACS, store them
(``store.store_study``: SEGs confirmed before the SR is sent). A study that fails is named with its reason and the
others go on; ``predictions.csv`` / ``breasts.csv`` / overlays cover the rated studies and ``studies.csv`` ends the
run (study, status, reason, objects stored). The exit code is 0 only when every study succeeded (2 when one had
input that cannot be used, 1 when only a store failed).

The shared predict options (``--detect``, ``--pixel_spacing``, ``--predict_dir``, ``--overlays``, the checkpoint
choice) are declared in ``cli/predict_options.py`` and mean the same here as on a manifest.

Privacy: the retrieved images are staged in a temporary folder deleted at the end; CSVs, overlays, file names
and messages know a study only by its pseudonym ``study-N`` (in the order of ``--study`` or of the query/folder).
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser, Namespace
from pydicom.dataset import Dataset

from birads_calc.clinical.errors import ClinicalError
from birads_calc.clinical.pacs import Pacs
from birads_calc.clinical.regions import Region, study_regions
from birads_calc.clinical.results import ModelInfo, StudyResults, rated_regions, study_results
from birads_calc.clinical.store import StoreError, access_of, add_access_options, store_study
from birads_calc.clinical.studies import (
    MAMMOGRAPHY_VIEWS,
    Study,
    describe,
    load_folder_study,
    read_folder,
    write_instance,
)
from birads_calc.data.cache import scale_mismatches
from birads_calc.data.dicom import ImageReadError, dicom_spacing
from birads_calc.data.manifest import Lesion
from birads_calc.data.masks import write_mask
from birads_calc.inference.study import Rater, load_rater, predict_lesions
from birads_calc.io import write_csv
from birads_calc.runs import RunFolderError, config_name, newest_checkpoint, run_dir_of_checkpoint

STUDY_COLUMNS = ("study", "status", "reason", "objects_stored", "exit_code")


def say(message: str) -> None:
    print(f"birads-calc predict: {message}", file=sys.stderr, flush=True)


def configure_parser(parser: ArgumentParser) -> None:
    """The DICOM path's own options (the shared ones come from ``cli/predict_options.py``)."""
    parser.add_argument(
        "--config", action="append", default=None, help="Training config(s): name runs/<config>/ as predict does."
    )
    parser.add_argument("--dicomweb", type=str | None, default=None, help="DICOMweb root URL of the PACS.")
    parser.add_argument("--dicom_dir", type=Path | None, default=None, help="A local folder of DICOM files instead.")
    parser.add_argument("--study", action="append", default=None, help="Study Instance UID (repeatable).")
    parser.add_argument(
        "--query", action="append", default=None, help="QIDO-RS filter KEY=VALUE (repeatable), e.g. StudyDate=20200101."
    )
    parser.add_argument(
        "--views", type=list[str] | None, default=None,
        help=f"Rate only these views (ViewPosition), e.g. [CC,MLO]; default all ({' '.join(MAMMOGRAPHY_VIEWS)}).",
    )  # fmt: skip
    parser.add_argument("--store", type=bool, default=True, help="With --dicomweb: store the SR and SEGs back.")
    parser.add_argument(
        "--cad_sr", action=ActionYesNo, default=False,
        help="Also write a Mammography CAD SR (TID 4000) for mammography workstations (docs/clinical.md).",
    )  # fmt: skip
    parser.add_argument("--batch_size", type=int, default=32, help="Windows per forward pass.")
    add_access_options(parser)


def main(cfg: Namespace) -> int:
    try:
        return run(cfg)
    except ClinicalError as error:
        say(f"error: {error}")
        return error.exit_code


@dataclass
class Outcome:
    """One study's line of ``studies.csv``."""

    study: str
    status: str = "failed"
    reason: str = ""
    objects_stored: int = 0
    exit_code: int = 0


@dataclass
class Rated:
    """A rated study: its regions, their manifest-like rows and predictions."""

    study: Study
    regions: list[Region]
    lesions: list[Lesion]
    predictions: dict = field(default_factory=dict)


def run(cfg: Namespace) -> int:
    checkpoint = find_checkpoint(cfg)
    pacs = Pacs(cfg.dicomweb, timeout=cfg.timeout, access=access_of(cfg)) if cfg.dicomweb else None
    wanted, folder_files = study_keys(cfg, pacs)
    rater = load_rater(checkpoint)
    out_dir = Path(cfg.predict_dir) if cfg.predict_dir else default_predict_dir(checkpoint, cfg)
    detector, ranker = study_detector(cfg)
    info = ModelInfo(run_name(checkpoint), sha256(checkpoint), sha256(ranker) if ranker else "")
    outcomes = {key: Outcome(key) for key, _ in wanted}
    rated: list[Rated] = []
    with tempfile.TemporaryDirectory(prefix="birads-calc-dicom-") as staging:
        for key, uid in wanted:
            try:
                source = pacs if pacs is not None else folder_files[uid]
                found = rate_study(cfg, source, key, uid, rater, Path(staging), detector, first_row=_rows(rated) + 1)
            except ClinicalError as error:
                say(f"{key}: not rated: {error}")
                outcomes[key].reason, outcomes[key].exit_code = str(error), error.exit_code
                continue
            if found is None:
                outcomes[key].status = "no region found"
                continue
            rated.append(found)
        if rated:
            rows = write_reports(cfg, out_dir, rated, rater, Path(staging))
            for item in rated:
                deliver(cfg, pacs, out_dir / "dicom", item, rows, rater, info, outcomes[item.study.key])
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "studies.csv", [vars(x) for x in outcomes.values()], STUDY_COLUMNS)
    say(f"wrote {out_dir / 'studies.csv'}")
    failed = [x for x in outcomes.values() if x.exit_code]
    if failed:
        say(f"{len(failed)} of {len(outcomes)} study(ies) failed: {', '.join(x.study for x in failed)}")
    return max([x.exit_code for x in failed], default=0)


def _rows(rated: Sequence[Rated]) -> int:
    return sum(len(x.lesions) for x in rated)


def study_detector(cfg: Namespace) -> tuple[Callable | None, Path | None]:
    """``detect_image`` with ``--detect_weights`` and that ranker file when ``--detect`` asks for the detector
    (imported only then: its imports cost), else ``(None, None)``. A weights file that is not a ranker is refused
    here, before any study."""
    if not cfg.detect:
        if cfg.detect_weights:
            raise ClinicalError("--detect_weights is the detector's; it needs --detect")
        return None, None
    from birads_calc.detection import detect_image
    from birads_calc.detection.ranking import WEIGHTS, load_ranker

    if cfg.detect_weights is None:
        return detect_image, WEIGHTS
    load_ranker(cfg.detect_weights)
    return functools.partial(detect_image, weights=cfg.detect_weights), Path(cfg.detect_weights)


def rate_study(cfg, source, key, uid, rater: Rater, staging: Path, detector, first_row: int) -> Rated | None:
    """Read, find, check and rate one study; ``None`` when the detector finds no region in it.

    ``source``: the PACS, or the study's files in ``--dicom_dir``.
    """
    if isinstance(source, Pacs):
        study = source.retrieve(key, uid, cfg.views)
    else:
        study = load_folder_study(key, uid, source, Path(cfg.dicom_dir), cfg.views)
    check_scale(study, rater.spacing, cfg.pixel_spacing)
    regions = study_regions(study, detect=cfg.detect, detector=detector, pixel_spacing=cfg.pixel_spacing)
    for note in study.notes:  # what was left out, and why (the SEGs' unused segments included)
        say(f"{key}: {note}")
    if not regions:
        say(f"{key}: the detector found no calcification region; nothing to rate or store for it")
        return None
    lesions = stage(staging, study, regions, first_row)
    say(f"{key}: rating {len(lesions)} region(s) on {len({x.image for x in lesions})} image(s)")
    try:
        predictions = predict_lesions(rater, lesions, rater.settings, batch_size=cfg.batch_size)
    except ImageReadError as error:  # e.g. a transfer syntax no installed decoder reads; names study-N/image-K
        raise ClinicalError(f"a mammogram cannot be decoded: {error}") from None
    return Rated(study, regions, lesions, predictions)


def check_scale(study: Study, record: dict | None, pixel_spacing: float | None) -> None:
    """The scale rule: a mammogram without spacing needs ``--pixel_spacing`` (then taken as its spacing); one more
    than 10 % off the training images' median spacing is named (the model sees its calcifications at another size).
    A model trained at a fixed spacing resamples every image to it (``inference.study``)."""
    spacings = {}
    for n, image in enumerate(study.images, 1):
        if dicom_spacing(image) is None and pixel_spacing:
            image.ImagerPixelSpacing = [pixel_spacing, pixel_spacing]  # as if the file recorded it (SEG measures too)
        spacings[f"image {n}: {describe(image)}"] = dicom_spacing(image)
    missing, off = scale_mismatches(record, spacings)
    if missing:
        raise ClinicalError(
            f"{study.key}: {', '.join(missing)} record(s) no pixel spacing, so the scale the model rates at is "
            "unknown: give it with --pixel_spacing MM"
        )
    if off:
        median = record["training_mm"]["median"]
        say(
            f"{study.key}: warning: {len(off)} image(s) differ by more than 10 % from the {median:.3g} mm per pixel of "
            f"the model's training images, so it sees their calcifications at another size: {', '.join(off)}"
        )


def write_reports(cfg, out_dir: Path, rated: Sequence[Rated], rater: Rater, staging: Path) -> list[dict]:
    """predictions.csv, breasts.csv and overlays of every rated study (as ``predict`` writes them)."""
    import torch

    from birads_calc.reporting.reports import prediction_rows, write_predict_reports

    lesions = [lesion for item in rated for lesion in item.lesions]
    offsets = [0]
    for item in rated[:-1]:
        offsets.append(offsets[-1] + len(item.lesions))
    merged = {
        key: torch.cat([item.predictions[key] + (offset if key == "index" else 0) for item, offset in
                        zip(rated, offsets, strict=True)])
        for key in rated[0].predictions
    }  # fmt: skip
    written = write_predict_reports(
        out_dir, merged, lesions, rater.settings.num_classes, root=staging, overlays=cfg.overlays,
        overlay_size=cfg.overlay_size, voi=rater.settings.voi,
    )  # fmt: skip
    say(f"wrote {', '.join(str(path) for path in written.values())}")
    return prediction_rows(merged, lesions, rater.settings.num_classes, root=staging)


def deliver(cfg, pacs, folder: Path, item: Rated, rows, rater: Rater, info: ModelInfo, outcome: Outcome) -> None:
    """Build, write and (from a PACS) store one study's results; the outcome says how far it got."""
    from birads_calc.reporting.reports import breast_rows

    key = item.study.key
    mine = sorted((row for row in rows if row["patient_id"] == key), key=lambda r: int(r["row"]))
    rated = rated_regions(item.regions, mine)
    results = study_results(item.study, rated, breast_rows(mine, rater.settings.num_classes), info)
    if cfg.cad_sr:
        from birads_calc.clinical.cad_sr import cad_report

        results.cad_sr = cad_report(item.study, results, info, rated)
    replace_folder(folder / key, results.files())
    say(f"{key}: wrote {len(results.segs)} SEG(s) and the SR{' and CAD SR' if cfg.cad_sr else ''} into {folder / key}")
    outcome.status, outcome.reason = "written", f"{len(results.files())} DICOM object(s) in {folder / key}"
    if pacs is None or not cfg.store:
        return
    try:
        outcome.objects_stored = store(pacs, key, results, folder / key)
    except StoreError as error:
        say(f"error: {error}")
        outcome.reason, outcome.exit_code, outcome.objects_stored = str(error), 1, error.stored
        outcome.status = "failed"
        return
    except ClinicalError as error:
        say(f"error: {key}: {error}")
        outcome.reason, outcome.exit_code, outcome.status = str(error), 1, "failed"
        return
    outcome.status = "stored"
    reports = len(results.files()) - len(results.segs)
    say(f"{key}: stored on the PACS {pacs.url} and confirmed there: {len(results.segs)} SEG(s), {reports} report(s)")


def store(pacs: Pacs, key: str, results: StudyResults, folder: Path) -> int:
    reports = [results.sr] + ([results.cad_sr] if results.cad_sr is not None else [])
    return store_study(pacs, key, results.segs, reports, folder)


def find_checkpoint(cfg: Namespace) -> Path:
    """``--ckpt_path FILE|last|best``, else the config's newest ``--evaluate_checkpoint`` checkpoint (as ``predict``
    on a manifest chooses it)."""
    if cfg.ckpt_path and str(cfg.ckpt_path) not in ("last", "best"):
        if not Path(cfg.ckpt_path).is_file():
            raise ClinicalError(f"--ckpt_path {cfg.ckpt_path}: no such file")
        return Path(cfg.ckpt_path)
    if not cfg.config:
        raise ClinicalError("give --config (its newest checkpoint is used) or --ckpt_path")
    name = config_name(cfg.config[:1])  # the method's config: the first, as runs are named
    which = str(cfg.ckpt_path or cfg.evaluate_checkpoint)
    try:
        checkpoint = newest_checkpoint(Path(cfg.runs_root), name, which)
    except RunFolderError as error:
        raise ClinicalError(str(error)) from None
    say(f"using the newest {which} checkpoint of config '{name}': {checkpoint}")
    return checkpoint


def run_name(checkpoint: Path) -> str:
    """``proposed/version_1 best.ckpt``: the run group, version and file of a checkpoint (no path of this machine)."""
    run_dir = run_dir_of_checkpoint(checkpoint)
    if run_dir is None:
        return Path(checkpoint).name
    return f"{run_dir.parent.name}/{run_dir.name} {Path(checkpoint).name}"


def study_keys(cfg: Namespace, pacs: Pacs | None) -> tuple[list[tuple[str, str]], dict[str, list[Path]]]:
    """(pseudonym, Study Instance UID) of every study asked for, in order, and with ``--dicom_dir`` each study's
    files (indexed here from their headers)."""
    if bool(cfg.dicomweb) == bool(cfg.dicom_dir):
        raise ClinicalError("give exactly one of --dicomweb URL and --dicom_dir DIR")
    files: dict[str, list[Path]] = {}
    if pacs is None:
        if cfg.query:
            raise ClinicalError("--query searches a PACS: use it with --dicomweb")
        files = read_folder(Path(cfg.dicom_dir), cfg.study or ())
        uids = list(files)
    else:
        uids = list(cfg.study or [])
        if cfg.query:
            uids += [uid for uid in pacs.find_studies(parse_query(cfg.query)) if uid not in uids]
        if not uids:
            raise ClinicalError("--dicomweb needs --study UID (repeatable) or --query KEY=VALUE")
    return [(f"study-{n}", uid) for n, uid in enumerate(uids, 1)], files


def parse_query(items: Sequence[str]) -> dict[str, str]:
    query = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ClinicalError(f"--query {item!r}: write it as KEY=VALUE, e.g. StudyDate=20200101")
        query[key.strip()] = value.strip()
    return query


def default_predict_dir(checkpoint: Path, cfg: Namespace) -> Path:
    """``<run>/predict/<dicomweb|dicom_dir>-<8 hex of the source>``: one folder per source and set of studies."""
    source = cfg.dicomweb or str(Path(cfg.dicom_dir).resolve())
    key = "\n".join([source, *sorted(cfg.study or []), *sorted(cfg.query or [])])
    run_dir = run_dir_of_checkpoint(checkpoint) or Path(cfg.runs_root)
    kind = "dicomweb" if cfg.dicomweb else "dicom_dir"
    return run_dir / "predict" / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage(folder: Path, study: Study, regions: Sequence[Region], first_row: int) -> list[Lesion]:
    """Images and masks as files (the model's readers take files), named by pseudonym only.

    Returns the lesions (``patient_id`` = ``study-N``, ``lesion_id`` = ``region-K``), rows numbered from
    ``first_row`` in the order of ``regions``.
    """
    names: dict[str, Path] = {}
    for n, image in enumerate(study.images, 1):
        names[image.SOPInstanceUID] = write_instance(folder / study.key / f"{study.key}-image-{n}.dcm", image)
    lesions = []
    for k, region in enumerate(regions, 1):
        mask = write_mask(folder / study.key / f"region-{k}.png", region.mask)
        lesions.append(
            Lesion(
                row=first_row + k - 1,
                patient_id=study.key,
                image=names[region.image.SOPInstanceUID],
                mask=mask,
                label=None,
                malignancy=0.5,
                lesion_id=f"region-{k}",
                laterality=str(region.image.get("ImageLaterality", "") or region.image.get("Laterality", "")),
                view=str(region.image.get("ViewPosition", "")),
            )
        )
    return lesions


def replace_folder(target: Path, files: dict[str, Dataset]) -> None:
    """Write the files into a hidden folder beside ``target``, then swap it in: old or new, never a mix."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    old = tmp.with_suffix(".old")
    try:
        for name, ds in files.items():
            write_instance(tmp / name, ds)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
