"""``birads-calc predict --dicomweb URL --study UID`` / ``--dicom_dir DIR``: rate the calcifications of DICOM
studies and return the results as DICOM (DESIGN §11, docs/clinical.md).

The steps, each a module of this package: get the studies (``pacs`` or ``studies.read_folder``), their regions
(``regions``: the study's SEG, else the detector), rate them with the trained model through the one-study path
(``inference.predict_lesions``, the checkpoint found as ``predict`` finds it: ``--ckpt_path`` or the newest best
checkpoint of ``--config``), write ``predictions.csv`` / ``breasts.csv`` / overlays as ``predict`` does
(``reporting.write_predict_reports``), then the SEG(s) and SR of each study (``results``) into
``<predict dir>/dicom/study-N/`` and, from a PACS, store them back (STOW-RS).

The model and data settings (window, spacing, VOI, attention) come from the checkpoint, which holds the data
module's hyperparameters: the images are rated exactly as the model was trained to see them.

Privacy: the retrieved images are staged in a temporary folder deleted at the end; CSVs, overlays, file names
and messages know a study only by its pseudonym ``study-N`` (in the order of ``--study`` or of the query/folder).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from jsonargparse import ArgumentParser, Namespace
from pydicom.dataset import Dataset

from birads_calc.clinical.errors import ClinicalError
from birads_calc.clinical.pacs import Pacs
from birads_calc.clinical.regions import Region, study_regions
from birads_calc.clinical.results import ModelInfo, RatedRegion, study_results
from birads_calc.clinical.studies import Study, read_folder, write_instance
from birads_calc.data.cache import CacheSettings
from birads_calc.data.dicom import ImageReadError
from birads_calc.data.manifest import Lesion
from birads_calc.data.masks import write_mask
from birads_calc.inference import predict_lesions
from birads_calc.reporting.reports import breast_rows, prediction_rows, write_predict_reports
from birads_calc.runs import RunFolderError, config_name, newest_best_checkpoint, run_dir_of_checkpoint
from birads_calc.training.model import BiradsClassifier


def say(message: str) -> None:
    print(f"birads-calc predict: {message}", file=sys.stderr, flush=True)


def configure_parser(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--config", action="append", default=None, help="Training config(s): name runs/<config>/ as predict does."
    )
    parser.add_argument("--ckpt_path", type=Path | None, default=None, help="Checkpoint (default: newest best).")
    parser.add_argument("--runs_root", type=Path, default=Path("runs"), help="Folder holding runs/<config>/.")
    parser.add_argument("--predict_dir", type=Path | None, default=None, help="Output folder (default: in the run).")
    parser.add_argument("--dicomweb", type=str | None, default=None, help="DICOMweb root URL of the PACS.")
    parser.add_argument("--dicom_dir", type=Path | None, default=None, help="A local folder of DICOM files instead.")
    parser.add_argument("--study", action="append", default=None, help="Study Instance UID (repeatable).")
    parser.add_argument(
        "--query", action="append", default=None, help="QIDO-RS filter KEY=VALUE (repeatable), e.g. StudyDate=20200101."
    )
    parser.add_argument("--detect", type=bool, default=False, help="Find the regions with the detector if no SEG.")
    parser.add_argument("--store", type=bool, default=True, help="With --dicomweb: store the SR and SEG back.")
    parser.add_argument("--overlays", type=bool, default=True, help="One overlay PNG per image.")
    parser.add_argument("--overlay_size", type=int, default=1024, help="Longest side of an overlay's mammogram (px).")
    parser.add_argument("--batch_size", type=int, default=32, help="Windows per forward pass.")
    parser.add_argument("--timeout", type=float, default=30.0, help="Seconds to wait for each PACS answer.")


def main(cfg: Namespace) -> int:
    try:
        return run(cfg)
    except ClinicalError as error:
        say(f"error: {error}")
        return error.exit_code


def run(cfg: Namespace) -> int:
    checkpoint = find_checkpoint(cfg)
    pacs = Pacs(cfg.dicomweb, timeout=cfg.timeout) if cfg.dicomweb else None
    studies = get_studies(cfg, pacs)
    regions = {study.key: study_regions(study, detect=cfg.detect) for study in studies}
    studies = with_regions(studies, regions)
    model, settings, attention = load_model(checkpoint)
    out_dir = Path(cfg.predict_dir) if cfg.predict_dir else default_predict_dir(checkpoint, cfg)
    info = ModelInfo(model_name(cfg, checkpoint), str(checkpoint), sha256(checkpoint))
    with tempfile.TemporaryDirectory(prefix="birads-calc-dicom-") as staging:
        lesions, located = stage(Path(staging), studies, regions)
        images = len({x.image for x in lesions})
        say(f"rating {len(lesions)} region(s) on {images} image(s) of {len(studies)} study(ies)")
        try:
            predictions = predict_lesions(model, lesions, settings, attention=attention, batch_size=cfg.batch_size)
        except ImageReadError as error:  # e.g. a transfer syntax no installed decoder reads; names study-N/image-K
            raise ClinicalError(f"a mammogram cannot be decoded: {error}") from None
        written = write_predict_reports(
            out_dir, predictions, lesions, settings.num_classes, root=Path(staging), overlays=cfg.overlays,
            overlay_size=cfg.overlay_size, voi=settings.voi,
        )  # fmt: skip
        rows = prediction_rows(predictions, lesions, settings.num_classes, root=Path(staging))
    say(f"wrote {', '.join(str(path) for path in written.values())}")
    results = write_results(out_dir / "dicom", studies, rows, located, settings.num_classes, info)
    if pacs is not None and cfg.store:
        store(pacs, results, out_dir / "dicom")
    return 0


def with_regions(studies: Sequence[Study], regions: dict[str, list[Region]]) -> list[Study]:
    """The studies that have something to rate; a study where the detector found nothing is named and left out."""
    for study in studies:
        if not regions[study.key]:
            say(f"{study.key}: the detector found no calcification region; nothing to rate or store for it")
    kept = [study for study in studies if regions[study.key]]
    if not kept:
        raise ClinicalError("the detector found no calcification region in any study: nothing to rate")
    return kept


def find_checkpoint(cfg: Namespace) -> Path:
    """``--ckpt_path``, else the newest best checkpoint of the config's runs (as ``predict`` finds it)."""
    if cfg.ckpt_path:
        if not Path(cfg.ckpt_path).is_file():
            raise ClinicalError(f"--ckpt_path {cfg.ckpt_path}: no such file")
        return Path(cfg.ckpt_path)
    if not cfg.config:
        raise ClinicalError("give --config (its newest best checkpoint is used) or --ckpt_path")
    name = config_name(cfg.config[:1])  # the method's config: the first, as runs are named
    try:
        checkpoint = newest_best_checkpoint(Path(cfg.runs_root), name)
    except RunFolderError as error:
        raise ClinicalError(str(error)) from None
    say(f"using the newest best checkpoint of config '{name}': {checkpoint}")
    return checkpoint


def model_name(cfg: Namespace, checkpoint: Path) -> str:
    """The config's name, else the run group of the checkpoint (``runs/<name>/version_k/checkpoints/x.ckpt``)."""
    if cfg.config:
        return config_name(cfg.config[:1])  # the method's config: the first, as runs are named
    run_dir = run_dir_of_checkpoint(checkpoint)
    return run_dir.parent.name if run_dir is not None else Path(checkpoint).stem


def get_studies(cfg: Namespace, pacs: Pacs | None) -> list[Study]:
    if bool(cfg.dicomweb) == bool(cfg.dicom_dir):
        raise ClinicalError("give exactly one of --dicomweb URL and --dicom_dir DIR")
    if pacs is None:
        if cfg.query:
            raise ClinicalError("--query searches a PACS: use it with --dicomweb")
        return read_folder(Path(cfg.dicom_dir), cfg.study or ())
    uids = list(cfg.study or [])
    if cfg.query:
        uids += [uid for uid in pacs.find_studies(parse_query(cfg.query)) if uid not in uids]
    if not uids:
        raise ClinicalError("--dicomweb needs --study UID (repeatable) or --query KEY=VALUE")
    return [pacs.retrieve(f"study-{n}", uid) for n, uid in enumerate(uids, 1)]


def parse_query(items: Sequence[str]) -> dict[str, str]:
    query = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ClinicalError(f"--query {item!r}: write it as KEY=VALUE, e.g. StudyDate=20200101")
        query[key.strip()] = value.strip()
    return query


def load_model(checkpoint: Path) -> tuple[BiradsClassifier, CacheSettings, bool]:
    """The model and the data settings it was trained with, both from the checkpoint (weights only)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True).get("datamodule_hyper_parameters", {})
        model = BiradsClassifier.load_from_checkpoint(
            checkpoint, map_location=device, weights_only=True, pretrained=False
        )
    except Exception as error:  # unreadable, truncated or unsafe: the checkpoint cannot be used, whatever the cause
        raise ClinicalError(f"checkpoint {checkpoint} cannot be loaded: {type(error).__name__}: {error}") from None
    fields = ("window", "stride", "pixel_spacing_mm", "voi")
    settings = CacheSettings(**{k: data[k] for k in fields if k in data}, num_classes=model.hparams.num_classes)
    return model, settings, bool(data.get("attention", True))


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


def stage(folder: Path, studies: Sequence[Study], regions: dict[str, list[Region]]):
    """Images and masks as files (the model's readers take files), named by pseudonym only.

    Returns the lesions (``patient_id`` = ``study-N``, ``lesion_id`` = ``region-K``) and, per lesion row, its
    study and region.
    """
    lesions, located = [], {}
    for study in studies:
        names: dict[str, Path] = {}
        for n, image in enumerate(study.images, 1):
            names[image.SOPInstanceUID] = write_instance(folder / study.key / f"{study.key}-image-{n}.dcm", image)
        for k, region in enumerate(regions[study.key], 1):
            row = len(lesions) + 1
            mask = write_mask(folder / study.key / f"region-{k}.png", region.mask)
            lesions.append(
                Lesion(
                    row=row,
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
            located[row] = (study, region)
    return lesions, located


def write_results(folder: Path, studies, rows, located, num_classes: int, info: ModelInfo) -> dict[str, list[Dataset]]:
    """Build every study's SEG(s) and SR, then write each study's folder whole (nothing half-written)."""
    results = {}
    for study in studies:
        mine = [row for row in rows if row["patient_id"] == study.key]
        rated = [RatedRegion(located[row["row"]][1], row) for row in sorted(mine, key=lambda r: r["row"])]
        segs, sr = study_results(study, rated, breast_rows(mine, num_classes), info)
        results[study.key] = [*segs, sr]
    for key, objects in results.items():
        replace_folder(
            folder / key, {f"seg-{k}.dcm": ds for k, ds in enumerate(objects[:-1], 1)} | {"sr.dcm": objects[-1]}
        )
    say(f"wrote the DICOM SR and SEG of {len(results)} study(ies) into {folder}")
    return results


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


def store(pacs: Pacs, results: dict[str, list[Dataset]], folder: Path) -> None:
    """STOW-RS every study's results; a failure says what was not stored and keeps the local files."""
    for n, (key, objects) in enumerate(results.items()):
        try:
            pacs.store(key, objects)
        except ClinicalError as error:
            left = ", ".join(list(results)[n:])
            raise ClinicalError(
                f"{error}. Not stored: {left}; their DICOM files are kept in {folder} (store them again from there).",
                exit_code=1,
            ) from None
        say(f"stored the SR and {len(objects) - 1} SEG(s) of {key} on the PACS {pacs.url}")
