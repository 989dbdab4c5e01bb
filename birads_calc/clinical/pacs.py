"""A PACS over DICOMweb (``dicomweb-client``): find studies (QIDO-RS), read them (WADO-RS), store results (STOW-RS)
and check that each stored object is really there (QIDO-RS by SOP Instance UID).

* **Who you are** (:func:`open_session`): basic authentication or a bearer token, read from the environment
  (``BIRADS_CALC_DICOMWEB_USER`` + ``BIRADS_CALC_DICOMWEB_PASSWORD``, or ``BIRADS_CALC_DICOMWEB_TOKEN``) or from a
  file named by ``--credentials`` (``user=``/``password=`` or ``token=`` lines); never from the command line,
  never written anywhere. TLS is verified against ``--ca_bundle FILE`` or the system's certificate store; a client
  certificate (``--client_cert``, PEM with its key or ``--client_key``) where the PACS asks for one.
* **Reading a study**: the metadata of every series first (WADO-RS metadata, no pixels), so objects that are not
  rated (a tomosynthesis volume of hundreds of megabytes, a CR) are never downloaded; then each selected object in
  the transfer syntax it is stored in (``transfer-syntax=*``: a JPEG 2000 archive is not asked to transcode) and
  decoded here (pydicom with the pylibjpeg plugins).
* Every HTTP or network failure becomes one message naming the PACS and what was asked; 401/403 say how to pass
  credentials, a TLS failure how to name the CA.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests
import retrying
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset

from birads_calc.clinical.errors import ClinicalError
from birads_calc.clinical.studies import Study, complete_type2, select

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
USER_ENV, PASSWORD_ENV, TOKEN_ENV = (
    "BIRADS_CALC_DICOMWEB_USER",
    "BIRADS_CALC_DICOMWEB_PASSWORD",
    "BIRADS_CALC_DICOMWEB_TOKEN",
)
HOW_TO_LOG_IN = (
    f"give credentials in the environment ({USER_ENV} + {PASSWORD_ENV} for basic authentication, or {TOKEN_ENV} "
    "for a bearer token) or in a file named by --credentials (lines user=..., password=... or token=...)"
)
STORED_SYNTAX = (("application/dicom", "*"),)  # WADO-RS: the object as stored, no transcoding by the PACS
# dicomweb-client retries a busy server (HTTP 408, 429, 503, 504) with exponential back-off; 3 attempts 0.5 s and
# 1 s apart keep a command from hanging on a PACS that is down while riding out a short overload.
ATTEMPTS, BACKOFF_MS = 3, 250
T = TypeVar("T")


@dataclass(frozen=True)
class Access:
    """How to reach a PACS: credentials file and TLS files (the secrets themselves are read when connecting)."""

    credentials: Path | None = None
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


class PacsSession(requests.Session):
    """A session whose ``--ca_bundle`` wins: requests otherwise lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the
    environment replace the session's own CA file on every request."""

    ca_bundle: str | None = None

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.ca_bundle is not None:
            settings["verify"] = self.ca_bundle
        return settings


def open_session(access: Access) -> requests.Session:
    """A requests session with the credentials and TLS settings of ``access`` (see the module docstring)."""
    session = PacsSession()
    for name in ("ca_bundle", "client_cert", "client_key", "credentials"):
        path = getattr(access, name)
        if path is not None and not Path(path).is_file():
            raise ClinicalError(f"--{name} {path}: no such file")
    session.verify = str(access.ca_bundle) if access.ca_bundle else system_ca_bundle()
    session.ca_bundle = str(access.ca_bundle) if access.ca_bundle else None
    if access.client_cert:
        session.cert = (
            (str(access.client_cert), str(access.client_key)) if access.client_key else str(access.client_cert)
        )
    secrets = read_credentials(access.credentials)
    if secrets.get("token"):
        session.headers["Authorization"] = f"Bearer {secrets['token']}"
    elif secrets.get("user"):
        session.auth = (secrets["user"], secrets.get("password", ""))
    return session


def read_credentials(path: Path | None) -> dict[str, str]:
    """``{"user", "password"}`` or ``{"token"}`` from the file, else from the environment; empty when neither."""
    if path is not None:
        values = {}
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep or key.strip() not in ("user", "password", "token"):
                raise ClinicalError(f"--credentials {path}: line {number} is not user=..., password=... or token=...")
            values[key.strip()] = value.strip()
        return values
    env = {
        "user": os.environ.get(USER_ENV),
        "password": os.environ.get(PASSWORD_ENV),
        "token": os.environ.get(TOKEN_ENV),
    }
    return {key: value for key, value in env.items() if value}


def system_ca_bundle() -> str | bool:
    """The system's CA file (where a hospital installs its own CA), else True (the requests/certifi default)."""
    if os.environ.get("REQUESTS_CA_BUNDLE"):
        return os.environ["REQUESTS_CA_BUNDLE"]
    cafile = ssl.get_default_verify_paths().cafile
    return cafile if cafile and Path(cafile).is_file() else True


class Pacs:
    """One DICOMweb server (``url`` is its DICOMweb root, e.g. ``https://host:8042/dicom-web``)."""

    def __init__(self, url: str, timeout: float = 30.0, access: Access | None = None):
        self.url = url.rstrip("/")
        self.client = DICOMwebClient(self.url, session=open_session(access or Access()), timeout=timeout)
        self.client.set_http_retry_params(max_attempts=ATTEMPTS, wait_exponential_multiplier=BACKOFF_MS)

    def find_studies(self, query: Mapping[str, str]) -> list[str]:
        """Study Instance UIDs matching QIDO-RS filters (e.g. ``{"StudyDate": "20200101", "ModalitiesInStudy":
        "MG"}``), in the PACS's order; empty is an error (nothing to rate)."""
        found = self._ask(
            f"search for studies {dict(query)}",
            lambda: self.client.search_for_studies(search_filters=dict(query)),
        )
        uids = [_value(x, STUDY_UID) for x in found]
        if not uids:
            raise ClinicalError(f"no study on the PACS {self.url} matches the query {dict(query)}")
        return uids

    def retrieve(self, key: str, uid: str, views: Sequence[str] | None = None) -> Study:
        """The study sorted by ``studies.select`` from its metadata; the selected objects fetched as stored."""
        series = self._ask(f"search the series of study {uid}", lambda: self.client.search_for_series(uid))
        if not series:
            raise ClinicalError(f"{key}: study {uid} not found on the PACS {self.url}")
        headers = []
        for item in series:
            series_uid = _value(item, SERIES_UID)
            metadata = self._ask(
                f"read the metadata of series {series_uid} of study {uid}",
                lambda s=series_uid: self.client.retrieve_series_metadata(uid, s),
            )
            headers += [Dataset.from_json(x, bulk_data_uri_handler=lambda *_: b"") for x in metadata]
        study = select(key, uid, headers, f"the PACS {self.url}", views)
        study.images = [complete_type2(self._instance(uid, x)) for x in study.images]
        study.segs = [self._instance(uid, x) for x in study.segs]
        return study

    def _instance(self, study_uid: str, header: Dataset) -> Dataset:
        series_uid, sop_uid = str(header.SeriesInstanceUID), str(header.SOPInstanceUID)
        return self._ask(
            f"retrieve object {sop_uid} of study {study_uid}",
            lambda: self.client.retrieve_instance(study_uid, series_uid, sop_uid, media_types=STORED_SYNTAX),
        )

    def send(self, what: str, datasets: Sequence[Dataset]) -> dict[str, str]:
        """STOW-RS the datasets; returns the PACS's failure reason per SOP Instance UID it says it refused."""
        response = self._ask(f"store {what}", lambda: self.client.store_instances(list(datasets)))
        failed = (response or Dataset()).get("FailedSOPSequence", [])
        return {
            str(x.get("ReferencedSOPInstanceUID")): f"failure reason {int(x.get('FailureReason', 0)):#06x}"
            for x in failed
        }

    def holds(self, study_uid: str, ds: Dataset) -> bool:
        """Whether the PACS has the object (QIDO-RS by SOP Instance UID): the proof a store worked."""
        found = self._ask(
            f"check that object {ds.SOPInstanceUID} is stored",
            lambda: self.client.search_for_instances(
                study_uid, search_filters={"SOPInstanceUID": str(ds.SOPInstanceUID)}
            ),
        )
        return any(_value(x, SOP_UID) == str(ds.SOPInstanceUID) for x in found)

    def _ask(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else "?"
            reason = error.response.reason if error.response is not None else str(error)
            if status in (401, 403):
                refused = "asks who you are" if status == 401 else "refused the credentials given"
                raise ClinicalError(
                    f"the PACS {self.url} {refused} (HTTP {status} {reason}) when asked to {what}: {HOW_TO_LOG_IN}"
                ) from None
            raise ClinicalError(f"the PACS {self.url} refused to {what}: HTTP {status} {reason}") from None
        except retrying.RetryError as error:  # still busy after the last attempt: the final answer's status
            attempt = error.last_attempt
            response = None if attempt.has_exception else attempt.value
            status = getattr(response, "status_code", "?")
            reason = getattr(response, "reason", "")
            raise ClinicalError(
                f"the PACS {self.url} refused to {what}: HTTP {status} {reason} (after {ATTEMPTS} attempts)"
            ) from None
        except requests.exceptions.SSLError as error:
            raise ClinicalError(
                f"the TLS connection to the PACS {self.url} failed ({_ssl_reason(error)}): if its certificate is "
                "signed by your own CA, give that CA's certificate with --ca_bundle FILE; if it wants a client "
                "certificate, give it with --client_cert FILE"
            ) from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ClinicalError(
                f"cannot reach the PACS at {self.url} to {what} ({type(error).__name__}): is the URL right (the "
                "DICOMweb root, e.g. http://host:8042/dicom-web) and the server running?"
            ) from None
        except requests.RequestException as error:
            raise ClinicalError(f"the PACS {self.url} could not {what}: {error}") from None


def _ssl_reason(error: Exception) -> str:
    text = str(error)
    for known in ("CERTIFICATE_VERIFY_FAILED", "certificate required", "WRONG_VERSION_NUMBER", "hostname mismatch"):
        if known.lower() in text.lower():
            return known.lower().replace("_", " ")
    return type(error).__name__


def _value(item: Mapping, tag: str) -> str:
    values = item.get(tag, {}).get("Value", [""])
    return str(values[0]) if values else ""
