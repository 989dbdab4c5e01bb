"""``predict --dicomweb`` against a real PACS (Orthanc + DICOMweb): retrieve, rate, store back, read back.

The reference for every region is predictions.csv and the reader's masks; the SR and SEGs are fetched from Orthanc
(WADO-RS), not from the local files, and parsed with highdicom; every SR written is read with OHIF's SR reader
(``@cornerstonejs/adapters``) and every object checked with dciodvfy. One Orthanc serves most tests (started once
for the module); the store filter and the login/TLS tests start their own.
"""

import copy
import os
import shutil
import subprocess
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from clinical_helpers import (
    CONFIG,
    breast_findings,
    check_every_sr,
    dciodvfy_problems,
    fit_tiny,
    read_csv,
    seg_segments,
    sr_findings,
    viewer_measurements,
)
from clinical_helpers import synthetic_studies as make_studies
from dicomweb_client import DICOMwebClient
from orthanc import free_port, running_orthanc, tls_proxy
from privacy import find_leaks, identifying_values
from pydicom.sr.codedict import codes
from pydicom.uid import JPEG2000Lossless, generate_uid
from training_helpers import single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main
from birads_calc.clinical.pacs import PASSWORD_ENV, USER_ENV
from birads_calc.clinical.studies import complete_type2

pytestmark = pytest.mark.slow
TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"
CR = "1.2.840.10008.5.1.4.1.1.1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    return fit_tiny(tmp_path_factory.mktemp("pacs"))


def new_uids(datasets, series: str | None = None, date: str = "20200102") -> list[pydicom.Dataset]:
    """Copies in a study of their own (its own date, so a query by date finds it alone), with new series (the
    images in one shared ``series`` when given) and SOP Instance UIDs; SEG references follow their images."""
    study, seg_series = generate_uid(), generate_uid()
    mapping = {}
    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        mapping[ds.SOPInstanceUID] = generate_uid()
        ds.StudyInstanceUID, ds.SOPInstanceUID, ds.StudyDate = study, mapping[ds.SOPInstanceUID], date
        ds.SeriesInstanceUID = seg_series if ds.Modality == "SEG" else series or generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    for ds in out:
        for item in [*ds.get("ReferencedSeriesSequence", []), *ds.get("SourceImageSequence", [])]:
            for ref in [item, *item.get("ReferencedInstanceSequence", [])]:
                if "ReferencedSOPInstanceUID" in ref and ref.ReferencedSOPInstanceUID in mapping:
                    ref.ReferencedSOPInstanceUID = mapping[ref.ReferencedSOPInstanceUID]
        for group in ds.get("PerFrameFunctionalGroupsSequence", []):
            for derivation in group.get("DerivationImageSequence", []):
                for source in derivation.SourceImageSequence:
                    source.ReferencedSOPInstanceUID = mapping.get(source.ReferencedSOPInstanceUID)
    images = {ds.SOPInstanceUID: ds for ds in out if ds.Modality == "MG"}
    for ds in out:  # a SEG's series reference names its image's (new) series
        for item in ds.get("ReferencedSeriesSequence", []):
            uid = item.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
            if uid in images:
                item.SeriesInstanceUID = images[uid].SeriesInstanceUID
    return out


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, list[pydicom.Dataset]]:
    """The studies on the PACS, by name (datasets: images and reader SEGs, plus what each layout adds)."""
    root = tmp_path_factory.mktemp("studies")
    make_studies(root)
    base = [pydicom.dcmread(p) for p in sorted((root / "dicom").rglob("*.dcm"))]
    images = [ds for ds in base if ds.Modality == "MG"]
    # four views in one series, beside a tomosynthesis volume and a CR the study also holds
    one_series = new_uids(base, series=generate_uid())
    tomo = copy.deepcopy(one_series[0])
    tomo.SOPClassUID = tomo.file_meta.MediaStorageSOPClassUID = TOMOSYNTHESIS
    tomo.SOPInstanceUID = tomo.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    tomo.SeriesInstanceUID, tomo.SeriesNumber, tomo.InstanceNumber = generate_uid(), 5, 1
    tomo.NumberOfFrames, tomo.PixelData = 2, tomo.PixelData * 2
    cr = copy.deepcopy(one_series[1])
    cr.SOPClassUID = cr.file_meta.MediaStorageSOPClassUID = CR
    cr.SOPInstanceUID = cr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    cr.Modality, cr.SeriesInstanceUID, cr.SeriesNumber, cr.InstanceNumber = "CR", generate_uid(), 6, 1
    # two mammograms in one series (an L CC and its repeat), stored as JPEG 2000, with a third party's density SEG
    # (a whole-breast segment) on the first and the reader's SEG on the second
    first = next(ds for ds in images if ds.ImageLaterality == "L" and ds.ViewPosition == "CC")
    repeat = copy.deepcopy(first)
    repeat.SOPInstanceUID = repeat.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    reader = next(ds for ds in base if ds.Modality == "SEG" and _source(ds) == first.SOPInstanceUID)
    pair = new_uids([first, repeat, reader], series=generate_uid(), date="20200103")
    pair[1].InstanceNumber = 2
    pair[2].ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID = pair[1].SOPInstanceUID
    for group in pair[2].PerFrameFunctionalGroupsSequence:
        group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID = pair[1].SOPInstanceUID
    for item in pair[2].get("SourceImageSequence", []):
        item.ReferencedSOPInstanceUID = pair[1].SOPInstanceUID
    for ds in pair[:2]:
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    return {
        "four": base,
        "one series": [*one_series, tomo, cr],
        "pair": [*pair, density_seg(pair[0])],
    }


def _source(seg: pydicom.Dataset) -> str:
    return seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID


def density_seg(image: pydicom.Dataset) -> hd.seg.Segmentation:
    """Another vendor's breast-density SEG: one segment, the whole breast (SCT 76752008 "Breast")."""
    pixels = np.zeros((1, image.Rows, image.Columns, 1), bool)
    pixels[0, 10:-10, 10:-10, 0] = True
    description = hd.seg.SegmentDescription(
        1, "breast", codes.SCT.Tissue, codes.SCT.Breast, "AUTOMATIC",
        hd.AlgorithmIdentificationSequence("density", codes.DCM.ArtificialIntelligence, "1"),
    )  # fmt: skip
    source = complete_type2(copy.deepcopy(image))
    return hd.seg.Segmentation(
        [source], pixels, "BINARY", [description], generate_uid(), 40, generate_uid(), 1, "OtherVendor", "Density",
        "1", "1", omit_empty_frames=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, studies) -> str:
    """Orthanc holding every study: its DICOMweb URL."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as url:
        client = DICOMwebClient(url)
        for datasets in studies.values():
            client.store_instances(datasets)
        yield url


def predict(runs: Path, *args: str) -> int:
    return main(["predict", "--config", str(CONFIG), "--runs_root", str(runs), "--overlay_size", "96", *args])


def uid_of(datasets) -> str:
    return str(datasets[0].StudyInstanceUID)


def fetch(url: str, uid: str, modality: str, **client_args) -> list[pydicom.Dataset]:
    client = DICOMwebClient(url, **client_args)
    found = client.search_for_series(uid, search_filters={"Modality": modality})
    return [ds for s in found for ds in client.retrieve_series(uid, s["0020000E"]["Value"][0])]


def check_results(url: str, uid: str, out: Path, tmp_path: Path, images) -> tuple[pydicom.Dataset, list]:
    """The newest SR on the PACS and its SEGs match predictions.csv; all pass dciodvfy and the viewer's reader."""
    rows = [
        r for r in read_csv(out / "predictions.csv") if r["patient_id"] == read_csv(out / "studies.csv")[0]["study"]
    ]
    srs = sorted(fetch(url, uid, "SR"), key=lambda ds: int(ds.SeriesNumber))
    sr = srs[-1]
    segs = [
        ds
        for ds in fetch(url, uid, "SEG")
        if ds.Manufacturer == "birads-calc" and ds.SeriesNumber == sr.SeriesNumber - 1
    ]
    findings, segments = sr_findings(sr), seg_segments(segs)
    assert len(findings) == len(rows) == len(segments) and len(segs) == len({r["image"] for r in rows})
    for row in rows:
        finding = findings[row["lesion_id"]]
        assert (finding["birads_pred"], finding["risk"]) == (row["birads_pred"], pytest.approx(float(row["risk"])))
        assert segments[finding["tracking_uid"]]["image"] == finding["image"]  # the SEG it names is on the PACS
    tmp_path.mkdir(parents=True, exist_ok=True)
    for ds in [sr, *segs]:
        path = tmp_path / f"{ds.Modality}-{ds.InstanceNumber}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_problems(path) == [], path
    measurements = viewer_measurements(tmp_path / "SR-1.dcm", images)
    assert sorted(m["label"] for m in measurements) == sorted(f["comment"] for f in findings.values())
    assert all(m["image"] == findings[m["label"].split(": BI-RADS")[0].split("(")[-1].rstrip(") ")]["image"]
               for m in measurements)  # fmt: skip
    return sr, segs


def test_round_trip_stores_confirmed_results_and_a_new_run_adds_a_successor(trained, studies, pacs, tmp_path, capfd):
    runs, _ = trained
    datasets = studies["four"]
    uid = uid_of(datasets)
    needles = identifying_values(ds.filename for ds in datasets if ds.Modality == "MG")
    out = tmp_path / "out"
    assert predict(runs, "--dicomweb", pacs, "--study", uid, "--predict_dir", str(out)) == 0
    logs = capfd.readouterr()
    assert "study-1: stored on the PACS" in logs.err and "confirmed there: 4 SEG(s), 1 report(s)" in logs.err
    assert "Traceback" not in logs.err
    assert read_csv(out / "studies.csv")[0] | {"reason": ""} == {
        "study": "study-1", "status": "stored", "reason": "", "objects_stored": "5", "exit_code": "0"
    }  # fmt: skip
    images = [ds for ds in datasets if ds.Modality == "MG"]
    sr, _ = check_results(pacs, uid, out, tmp_path, images)
    assert sr.PatientName == datasets[0].PatientName and "PredecessorDocumentsSequence" not in sr
    names = {"L": "Left breast", "R": "Right breast"}
    assert breast_findings(sr) == {names[b["laterality"]]: b["birads_max"] for b in read_csv(out / "breasts.csv")}
    assert find_leaks(needles, out, [logs.out, logs.err], exclude=["dicom/*/*.dcm"]) == []

    # a QIDO-RS query finds the same study; the results stored back are not input; a second run adds results in
    # new series, its SR naming the first as predecessor
    again = tmp_path / "again"
    query = ["--query", f"StudyDate={datasets[0].StudyDate}", "--query", "ModalitiesInStudy=MG"]
    assert predict(runs, "--dicomweb", pacs, *query, "--predict_dir", str(again)) == 0
    assert read_csv(again / "predictions.csv") == read_csv(out / "predictions.csv")
    second, second_segs = check_results(pacs, uid, again, tmp_path / "second", images)
    assert int(second.SeriesNumber) > int(sr.SeriesNumber) and int(second_segs[0].SeriesNumber) > int(sr.SeriesNumber)
    (predecessor,) = second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert predecessor.ReferencedSOPInstanceUID == sr.SOPInstanceUID


def test_every_layout_of_a_study_is_rated(trained, studies, pacs, tmp_path, capfd):
    runs, _ = trained
    # four mammograms in one series, beside a tomosynthesis volume and a CR (skipped, one note each)
    datasets = studies["one series"]
    out = tmp_path / "one-series"
    capfd.readouterr()
    assert predict(runs, "--dicomweb", pacs, "--study", uid_of(datasets), "--predict_dir", str(out)) == 0
    err = capfd.readouterr().err
    assert "series 5 object 1 (breast tomosynthesis volume): skipped" in err
    assert "series 6 object 1 (computed radiography (CR)): skipped" in err
    images = [ds for ds in datasets if ds.Modality == "MG" and ds.SOPClassUID != TOMOSYNTHESIS]
    assert len({ds.SeriesInstanceUID for ds in images}) == 1 and len(images) == 4
    check_results(pacs, uid_of(datasets), out, tmp_path / "a", images)
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == sum(len(ds.SegmentSequence) for ds in datasets if ds.Modality == "SEG")

    # two mammograms in one series, JPEG 2000 (decoded here), a density SEG ignored: without --detect only the
    # reader's image is rated; with it the detector searches the image the density SEG covered
    datasets = studies["pair"]
    out = tmp_path / "pair"
    capfd.readouterr()
    assert predict(runs, "--dicomweb", pacs, "--study", uid_of(datasets), "--predict_dir", str(out)) == 0
    err = capfd.readouterr().err
    assert "(segmentation): ignored, its segments are not coded as calcifications" in err
    rows = read_csv(out / "predictions.csv")
    reader = next(ds for ds in datasets if ds.Modality == "SEG" and ds.Manufacturer != "OtherVendor")
    assert len(rows) == len(reader.SegmentSequence) and {r["image"] for r in rows} == {"study-1/study-1-image-2.dcm"}
    images = [ds for ds in datasets if ds.Modality == "MG"]
    check_results(pacs, uid_of(datasets), out, tmp_path / "b", images)
    detected = tmp_path / "detected"
    args = ["--study", uid_of(datasets), "--predict_dir", str(detected), "--detect", "--store", "false"]
    assert predict(runs, "--dicomweb", pacs, *args) == 0
    rows = read_csv(detected / "predictions.csv")
    assert {r["image"] for r in rows} == {"study-1/study-1-image-1.dcm", "study-1/study-1-image-2.dcm"}
    sr = detected / "dicom" / "study-1" / "sr.dcm"
    certainties = [f["certainty"] for f in sr_findings(pydicom.dcmread(sr)).values()]
    assert sum(c is not None for c in certainties) == sum(r["image"].endswith("image-1.dcm") for r in rows)
    assert len(viewer_measurements(sr, images)) == len(rows)
    for path in (detected / "dicom" / "study-1").glob("*.dcm"):
        assert dciodvfy_problems(path) == [], path


def test_a_batch_stores_the_studies_that_work_and_names_the_one_that_does_not(trained, studies, pacs, tmp_path, capfd):
    runs, _ = trained
    out = tmp_path / "out"
    good, bad = uid_of(studies["four"]), "1.2.3.4.5"
    args = ["--study", good, "--study", bad, "--study", uid_of(studies["one series"]), "--predict_dir", str(out)]
    capfd.readouterr()
    assert predict(runs, "--dicomweb", pacs, *args) == 2
    err = capfd.readouterr().err
    assert f"study-2: not rated: study-2: study {bad} not found on the PACS" in err and "Traceback" not in err
    status = {r["study"]: (r["status"], r["objects_stored"], r["exit_code"]) for r in read_csv(out / "studies.csv")}
    assert status == {"study-1": ("stored", "5", "0"), "study-2": ("failed", "0", "2"), "study-3": ("stored", "5", "0")}
    assert check_every_sr(out) == 2


def test_pacs_failures_get_one_message_and_no_traceback(trained, studies, pacs, tmp_path, capfd):
    runs, _ = trained
    uid = uid_of(studies["four"])

    def fails(code: int, args, *expected) -> None:
        capfd.readouterr()
        assert predict(runs, *args, "--predict_dir", str(tmp_path / "out")) == code
        err = capfd.readouterr().err
        assert all(text in err for text in expected) and "Traceback" not in err, err
        assert not (tmp_path / "out" / "predictions.csv").exists()

    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    fails(2, ["--dicomweb", closed, "--study", uid], "cannot reach the PACS", closed)
    wrong_root = pacs.replace("/dicom-web", "/no-such-root")
    fails(2, ["--dicomweb", wrong_root, "--study", uid], "refused", "HTTP 404")
    with overloaded_server() as busy:  # a server error (5xx), e.g. a PACS behind an overloaded proxy
        fails(2, ["--dicomweb", busy, "--study", uid], "refused", "HTTP 503")
    fails(2, ["--dicomweb", pacs, "--study", "1.2.3.4"], "study-1: study 1.2.3.4 not found on the PACS")
    fails(2, ["--dicomweb", pacs, "--query", "StudyDate=19000101"], "no study on the PACS", "matches the query")


@contextmanager
def overloaded_server():
    """A web server answering every request with 503 Service Unavailable: its URL."""

    class Busy(BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's name for the GET handler
            self.send_error(503, "Service Unavailable")

        def log_message(self, *args):  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()


DROP_SEG_2 = """
function ReceivedInstanceFilter(dicom, origin, info)
  local flag = io.open('{flag}', 'r')
  if flag ~= nil then
    flag:close()
    if dicom.Modality == 'SEG' and dicom.InstanceNumber == '2' then return false end
  end
  return true
end
"""


def test_a_dropped_seg_leaves_no_dangling_sr_and_store_sends_it_again(trained, studies, tmp_path, capfd):
    runs, _ = trained
    datasets = studies["four"]
    uid = uid_of(datasets)
    flag = tmp_path / "drop-seg-2"
    with running_orthanc(tmp_path / "orthanc", lua=DROP_SEG_2.replace("{flag}", str(flag))) as url:
        DICOMwebClient(url).store_instances(datasets)
        flag.write_text("this PACS drops SEG 2 while the file exists")  # the reader's SEGs are all in
        out = tmp_path / "out"
        capfd.readouterr()
        assert predict(runs, "--dicomweb", url, "--study", uid, "--predict_dir", str(out)) == 1
        err = capfd.readouterr().err
        assert "did not keep SEG 2 (not found on it after the store)" in err and "not sent: SR" in err, err
        assert "on the PACS: SEG 1, SEG 3, SEG 4" in err and f"birads-calc store {out / 'dicom' / 'study-1'}" in err
        assert fetch(url, uid, "SR") == []  # no SR pointing at a missing SEG
        ours = [ds for ds in fetch(url, uid, "SEG") if ds.Manufacturer == "birads-calc"]
        assert sorted(int(ds.InstanceNumber) for ds in ours) == [1, 3, 4]
        assert read_csv(out / "studies.csv")[0]["status"] == "failed"
        assert read_csv(out / "studies.csv")[0]["objects_stored"] == "3"

        flag.unlink()  # the PACS is fixed: the kept results are sent again
        assert main(["store", str(out), "--dicomweb", url]) == 0
        assert "study-1: 5 object(s) on the PACS" in capfd.readouterr().err
        check_results(url, uid, out, tmp_path / "after", [ds for ds in datasets if ds.Modality == "MG"])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA): (PEM with key for Orthanc, the certificate alone)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "ca-key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    (folder / "orthanc.pem").write_text(key.read_text() + cert.read_text())
    return folder / "orthanc.pem", cert


@pytest.fixture(scope="module")
def client_certificate(certificate) -> tuple[Path, Path]:
    """A client certificate signed by the test's CA (the server certificate doubles as it): (client PEM, CA)."""
    _, ca = certificate
    folder = ca.parent
    key = folder / "ca-key.pem"
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(folder / "client-key.pem"),
         "-out", str(folder / "client.csr"), "-subj", "/CN=birads-calc-client"], check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(folder / "client.csr"), "-CA", str(ca), "-CAkey", str(key),
         "-CAcreateserial", "-days", "1", "-out", str(folder / "client.pem")], check=True, capture_output=True,
    )  # fmt: skip
    (folder / "client-full.pem").write_text(
        (folder / "client.pem").read_text() + (folder / "client-key.pem").read_text()
    )
    return folder / "client-full.pem", ca


def test_a_pacs_with_https_and_a_login(trained, studies, certificate, client_certificate, tmp_path, capfd, monkeypatch):
    runs, _ = trained
    datasets = studies["four"]
    uid = uid_of(datasets)
    server_pem, ca = certificate
    password = "pw-Zq7-never-written"
    with (
        running_orthanc(tmp_path / "orthanc", users={"reader": password}) as plain,
        tls_proxy(plain, server_pem) as url,
    ):
        import requests

        session = requests.Session()  # the test's own access: plain HTTP straight to Orthanc
        session.auth = ("reader", password)
        DICOMwebClient(plain, session=session).store_instances(datasets)
        base = ["--dicomweb", url, "--study", uid]

        # an unknown CA is refused, with the way out
        monkeypatch.setenv(USER_ENV, "reader")
        monkeypatch.setenv(PASSWORD_ENV, password)
        capfd.readouterr()
        assert predict(runs, *base, "--predict_dir", str(tmp_path / "no-ca")) == 2
        err = capfd.readouterr().err
        assert "TLS connection to the PACS" in err and "--ca_bundle FILE" in err and "Traceback" not in err

        # the right credentials from the environment, the CA given: rated and stored
        out = tmp_path / "out"
        assert predict(runs, *base, "--ca_bundle", str(ca), "--predict_dir", str(out)) == 0
        logs = capfd.readouterr()
        assert "stored on the PACS" in logs.err
        assert len(fetch(plain, uid, "SR", session=session)) == 1

        # wrong credentials: HTTP 401, named with how to pass them
        monkeypatch.setenv(PASSWORD_ENV, "wrong")
        assert predict(runs, *base, "--ca_bundle", str(ca), "--predict_dir", str(tmp_path / "wrong")) == 2
        err = capfd.readouterr().err
        assert f"the PACS {url} asks who you are (HTTP 401" in err and USER_ENV in err and "--credentials" in err

        # the same from a credentials file
        monkeypatch.delenv(USER_ENV)
        monkeypatch.delenv(PASSWORD_ENV)
        credentials = tmp_path / "credentials"
        credentials.write_text(f"user=reader\npassword={password}\n")
        os.chmod(credentials, 0o600)
        args = ["--ca_bundle", str(ca), "--credentials", str(credentials), "--store", "false"]
        assert predict(runs, *base, *args, "--predict_dir", str(tmp_path / "file")) == 0
        texts = capfd.readouterr()

        # a PACS that asks for a client certificate (mutual TLS): refused without it, with the way out; let in with it
        client, client_ca = client_certificate
        with tls_proxy(plain, server_pem, client_ca=client_ca) as mutual:
            mtls = ["--dicomweb", mutual, "--study", uid, "--ca_bundle", str(ca), "--credentials", str(credentials)]
            assert predict(runs, *mtls, "--store", "false", "--predict_dir", str(tmp_path / "no-cert")) == 2
            err = capfd.readouterr().err
            assert "TLS connection to the PACS" in err and "--client_cert FILE" in err
            args = ["--client_cert", str(client), "--store", "false", "--predict_dir", str(tmp_path / "cert")]
            assert predict(runs, *mtls, *args) == 0
    assert check_every_sr(out) + check_every_sr(tmp_path / "file") == 2
    for folder in (out, tmp_path / "file", runs):
        assert find_leaks({password}, folder, [logs.out, logs.err, texts.out, texts.err]) == []
