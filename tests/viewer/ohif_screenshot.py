"""The picture in docs/clinical.md: OHIF (the built viewer of the npm package ``@ohif/app``) showing a study rated by
``predict --dicomweb``, its SR marks on the mammogram, in headless Chromium (Debian's ``chromium``).

    npm pack @ohif/app@3.13.2 && tar xzf ohif-app-3.13.2.tgz          # the built viewer: package/dist
    python tests/viewer/ohif_screenshot.py --ohif package/dist --out docs/img/ohif-sr.png

It starts Orthanc (as the tests do) with one synthetic 4-image study and its reader's SEGs, rates it with a ResNet-18
checkpoint (random weights: the picture is about what a viewer shows, not about the model) through the real
command, serves OHIF and Orthanc's DICOMweb from one origin (OHIF's config points at ``/dicom-web``), and screenshots
``/viewer?StudyInstanceUIDs=...&initialSeriesInstanceUID=<the SR's series>``, which opens the SR in the viewport.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

CONFIG = """window.config = {
  routerBasename: null, extensions: [], modes: [], showStudyList: true, maxNumberOfWebWorkers: 1,
  showWarningMessageForCrossOrigin: false, showCPUFallbackMessage: false, showLoadingIndicator: false,
  defaultDataSourceName: 'orthanc',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb', sourceName: 'orthanc',
    configuration: {
      friendlyName: 'Orthanc', name: 'orthanc', wadoUriRoot: '/wado', qidoRoot: '/dicom-web',
      wadoRoot: '/dicom-web', qidoSupportsIncludeField: false, imageRendering: 'wadors',
      thumbnailRendering: 'wadors', enableStudyLazyLoad: true, supportsFuzzyMatching: false,
      supportsWildcard: true, omitQuotationForMultipartRequest: true, bulkDataURI: { enabled: true },
    },
  }],
};
"""


def serve(dist: Path, orthanc: str) -> tuple[ThreadingHTTPServer, str]:
    """OHIF's files and, under /dicom-web and /wado, Orthanc: one origin for the browser."""
    upstream = orthanc.rsplit("/dicom-web", 1)[0]

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith(("/dicom-web", "/wado")):
                answer = requests.get(upstream + self.path, headers={"Accept": self.headers.get("Accept", "*/*")})
                self.send_response(answer.status_code)
                for key in ("Content-Type",):
                    if key in answer.headers:
                        self.send_header(key, answer.headers[key])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)
                return
            if not (dist / self.path.split("?")[0].lstrip("/")).is_file():
                self.path = "/index.html"  # the viewer's own routes
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(dist)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ohif", type=Path, required=True, help="the built viewer (package/dist of @ohif/app)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--wait_ms", type=int, default=40000, help="virtual time Chromium gives the viewer")
    args = parser.parse_args()

    from bench_clinical import four_image_study, write_checkpoint
    from dicomweb_client import DICOMwebClient
    from orthanc import start_orthanc

    from birads_calc.cli import main as birads_calc

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dist = root / "ohif"
        shutil.copytree(args.ohif, dist)
        (dist / "app-config.js").write_text(CONFIG)
        with start_orthanc(root / "orthanc") as url:
            datasets = four_image_study(root / "synth")
            DICOMwebClient(url).store_instances(datasets)
            uid = str(datasets[0].StudyInstanceUID)
            checkpoint = write_checkpoint(root / "resnet18.ckpt")
            out = root / "out"
            code = birads_calc(["predict", "--dicomweb", url, "--study", uid, "--ckpt_path", str(checkpoint),
                                "--overlays", "false", "--predict_dir", str(out)])  # fmt: skip
            if code != 0:
                return code
            import pydicom

            sr = pydicom.dcmread(out / "dicom" / "study-1" / "sr.dcm", stop_before_pixels=True)
            server, origin = serve(dist, url)
            page = f"{origin}/viewer?StudyInstanceUIDs={uid}&initialSeriesInstanceUID={sr.SeriesInstanceUID}"
            args.out.parent.mkdir(parents=True, exist_ok=True)
            shot = subprocess.run(
                ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu-sandbox", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--window-size=1600,1000",
                 f"--virtual-time-budget={args.wait_ms}",
                 f"--screenshot={args.out.resolve()}", page],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            if shot.returncode != 0 or not args.out.is_file():
                print(shot.stderr[-3000:], file=sys.stderr)
                return 1
            server.shutdown()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
