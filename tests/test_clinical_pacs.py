"""``predict --dicomweb`` against a real PACS (Orthanc + DICOMweb): retrieve, rate, store back, read back.

The reference for every region is predictions.csv; the SR and SEG are fetched from Orthanc (WADO-RS), not from
the local files, and parsed with highdicom.
"""

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
from clinical_helpers import CONFIG, breast_findings, fit_tiny, read_csv, segment_of_frame, sr_findings
from clinical_helpers import synthetic_studies as make_studies
from dicomweb_client import DICOMwebClient
from orthanc import free_port, running_orthanc
from privacy import find_leaks, identifying_values
from training_helpers import single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main

pytestmark = pytest.mark.slow
REJECT_SR = """
function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.Modality == 'SR' then error('SR refused by this PACS') end
  return true
end
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    return fit_tiny(tmp_path_factory.mktemp("pacs"))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[list[pydicom.Dataset], str]:
    """One synthetic study and its reader's SEGs as datasets, and its Study Instance UID."""
    root = tmp_path_factory.mktemp("study")
    make_studies(root)
    datasets = [pydicom.dcmread(p) for p in sorted((root / "dicom").rglob("*.dcm"))]
    return datasets, str(datasets[0].StudyInstanceUID)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, study) -> str:
    """Orthanc holding the study: its DICOMweb URL."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as url:
        DICOMwebClient(url).store_instances(study[0])
        yield url


def predict(runs: Path, *args: str) -> int:
    return main(["predict", "--config", str(CONFIG), "--runs_root", str(runs), "--overlay_size", "96", *args])


def fetch(url: str, uid: str, modality: str) -> list[pydicom.Dataset]:
    client = DICOMwebClient(url)
    found = client.search_for_series(uid, search_filters={"Modality": modality})
    return [ds for s in found for ds in client.retrieve_series(uid, s["0020000E"]["Value"][0])]


def test_round_trip_through_orthanc_stores_an_sr_and_seg_that_match_predictions_csv(
    trained, study, pacs, tmp_path, capfd
):
    runs, best = trained
    datasets, uid = study
    needles = identifying_values(ds.filename for ds in datasets if ds.Modality == "MG")
    out = tmp_path / "out"
    assert predict(runs, "--dicomweb", pacs, "--study", uid, "--predict_dir", str(out)) == 0
    logs = capfd.readouterr()
    assert "stored the SR and" in logs.err and "Traceback" not in logs.err

    rows = read_csv(out / "predictions.csv")
    readers = [ds for ds in datasets if ds.Modality == "SEG"]
    assert len(rows) == sum(len(ds.SegmentSequence) for ds in readers)  # every reader segment rated once
    (sr,) = fetch(pacs, uid, "SR")
    segs = {ds.SOPInstanceUID: ds for ds in fetch(pacs, uid, "SEG") if ds.Manufacturer == "birads-calc"}
    assert sr.StudyInstanceUID == uid and sr.PatientName == datasets[0].PatientName
    findings = sr_findings(sr)
    assert sorted(findings) == sorted(r["lesion_id"] for r in rows)
    images = {ds.SOPInstanceUID for ds in datasets if ds.Modality == "MG"}
    for row in rows:
        finding = findings[row["lesion_id"]]
        assert (finding["birads_pred"], finding["risk"]) == (row["birads_pred"], float(row["risk"]))
        assert finding["image"] in images and finding["seg"] in segs  # the SEG it points at is on the PACS
        label, mask = segment_of_frame(segs[finding["seg"]], finding["frame"])
        assert label == row["lesion_id"] and mask.any()
    names = {"L": "left breast: highest category", "R": "right breast: highest category"}
    assert breast_findings(sr) == {names[b["laterality"]]: b["birads_max"] for b in read_csv(out / "breasts.csv")}
    texts = [str(e.value) for e in sr.iterall() if e.keyword == "TextValue"]
    assert f"checkpoint {best}" in texts
    # privacy: identifying fields only inside the DICOM results
    assert find_leaks(needles, out, [logs.out, logs.err], exclude=["dicom/*/*.dcm"]) == []

    # a QIDO-RS query finds the same study; the SEG stored back is a result, not a second set of regions
    again = tmp_path / "again"
    query = ["--query", f"StudyDate={datasets[0].StudyDate}", "--query", "ModalitiesInStudy=MG"]
    assert predict(runs, "--dicomweb", pacs, *query, "--store", "false", "--predict_dir", str(again)) == 0
    assert read_csv(again / "predictions.csv") == read_csv(out / "predictions.csv")


def test_pacs_failures_get_one_message_and_no_traceback(trained, study, pacs, tmp_path, capfd):
    runs, _ = trained
    _, uid = study

    def fails(code: int, *args_and_expected) -> None:
        args, expected = args_and_expected[0], args_and_expected[1:]
        capfd.readouterr()
        assert predict(runs, *args, "--predict_dir", str(tmp_path / "out")) == code
        err = capfd.readouterr().err
        assert all(text in err for text in expected) and "Traceback" not in err, err
        assert not (tmp_path / "out").exists()

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


def test_a_rejected_store_keeps_the_local_dicom_files_and_says_so(trained, study, tmp_path, capfd):
    runs, _ = trained
    datasets, uid = study
    with running_orthanc(tmp_path / "orthanc", lua=REJECT_SR) as url:
        DICOMwebClient(url).store_instances(datasets)
        out = tmp_path / "out"
        capfd.readouterr()
        assert predict(runs, "--dicomweb", url, "--study", uid, "--predict_dir", str(out)) == 1
        err = capfd.readouterr().err
        assert "rejected 1 of the" in err and "(SR)" in err, err
        assert "Not stored: study-1" in err and str(out / "dicom") in err and "Traceback" not in err
        assert (out / "dicom" / "study-1" / "sr.dcm").is_file() and (out / "predictions.csv").is_file()
        assert fetch(url, uid, "SR") == []
