"""A PACS over DICOMweb (``dicomweb-client``): find studies (QIDO-RS), retrieve them (WADO-RS), store results
(STOW-RS), with every HTTP or network failure turned into one message naming the PACS and what was asked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import requests
import retrying
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset

from birads_calc.clinical.errors import ClinicalError
from birads_calc.clinical.studies import Study, build_study

STUDY_UID, SERIES_UID, MODALITY = "0020000D", "0020000E", "00080060"
# dicomweb-client retries a busy server (HTTP 408, 429, 503, 504) with exponential back-off; 3 attempts 0.5 s and
# 1 s apart keep a command from hanging on a PACS that is down while riding out a short overload.
ATTEMPTS, BACKOFF_MS = 3, 250
T = TypeVar("T")


class Pacs:
    """One DICOMweb server (``url`` is its DICOMweb root, e.g. ``http://host:8042/dicom-web``)."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.client = DICOMwebClient(self.url, timeout=timeout)
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

    def retrieve(self, key: str, uid: str) -> Study:
        """The study's mammograms and SEGs (the other series, e.g. earlier results or reports, are not fetched)."""
        series = self._ask(f"search the series of study {uid}", lambda: self.client.search_for_series(uid))
        if not series:
            raise ClinicalError(f"{key}: study {uid} not found on the PACS {self.url}")
        wanted = [_value(x, SERIES_UID) for x in series if _value(x, MODALITY) in ("MG", "SEG")]
        instances: list[Dataset] = []
        for series_uid in wanted:
            instances += self._ask(
                f"retrieve series {series_uid} of study {uid}",
                lambda s=series_uid: self.client.retrieve_series(uid, s),
            )
        return build_study(key, uid, instances, f"the PACS {self.url}")

    def store(self, key: str, datasets: Sequence[Dataset]) -> None:
        """Store the results of a study (STOW-RS); a partial store is a failure too.

        The response must list every object sent as stored: a server that drops an object may answer success
        with neither a failed nor a referenced entry for it (Orthanc does when a filter script raises).
        """
        response = self._ask(f"store the results of {key}", lambda: self.client.store_instances(list(datasets)))
        response = response if response is not None else Dataset()
        stored = {str(x.get("ReferencedSOPInstanceUID")) for x in response.get("ReferencedSOPSequence", [])}
        missing = [ds for ds in datasets if str(ds.SOPInstanceUID) not in stored]
        if missing:
            reasons = sorted({f"{int(x.get('FailureReason', 0)):#06x}" for x in response.get("FailedSOPSequence", [])})
            why = f"failure reason {', '.join(reasons)}" if reasons else "not listed as stored in its answer"
            kinds = ", ".join(sorted({str(ds.Modality) for ds in missing}))
            raise ClinicalError(
                f"the PACS {self.url} rejected {len(missing)} of the {len(datasets)} result objects ({kinds}) of "
                f"{key} ({why})",
                exit_code=1,
            )

    def _ask(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else "?"
            reason = error.response.reason if error.response is not None else str(error)
            raise ClinicalError(f"the PACS {self.url} refused to {what}: HTTP {status} {reason}") from None
        except retrying.RetryError as error:  # still busy after the last attempt: the final answer's status
            attempt = error.last_attempt
            response = None if attempt.has_exception else attempt.value
            status = getattr(response, "status_code", "?")
            reason = getattr(response, "reason", "")
            raise ClinicalError(
                f"the PACS {self.url} refused to {what}: HTTP {status} {reason} (after {ATTEMPTS} attempts)"
            ) from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ClinicalError(
                f"cannot reach the PACS at {self.url} to {what} ({type(error).__name__}): is the URL right (the "
                "DICOMweb root, e.g. http://host:8042/dicom-web) and the server running?"
            ) from None
        except requests.RequestException as error:
            raise ClinicalError(f"the PACS {self.url} could not {what}: {error}") from None


def _value(item: Mapping, tag: str) -> str:
    values = item.get(tag, {}).get("Value", [""])
    return str(values[0]) if values else ""
