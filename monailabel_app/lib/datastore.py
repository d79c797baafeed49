"""A DICOMweb datastore for chest radiographs.

MONAI Label's DICOMweb datastore searches series with one filter, ``{"Modality": "CT"}``
unless told otherwise. Chest radiographs are CR or DX; a QIDO search for several values of
one attribute is not understood the same way by every archive, so this datastore searches
once per modality and joins the results. Requests get a timeout (an archive that stops
answering must not hang an annotator's request forever); it is the app's
``dicomweb_timeout`` (seconds).
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from cachetools import TTLCache, cached
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from pydicom import Dataset

logger = logging.getLogger(__name__)

RADIOGRAPH_MODALITIES = ("CR", "DX")


class TimeoutSession(requests.Session):
    """A requests session whose every request has a timeout unless the caller gives one."""

    def __init__(self, timeout: float):
        super().__init__()
        self.default_timeout = timeout

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, url, *args, **kwargs)


class RadiographDatastore(DICOMWebDatastore):
    """Series of the given modalities (default CR and DX) on a DICOMweb server."""

    def __init__(self, url: str, modalities: tuple[str, ...] = RADIOGRAPH_MODALITIES, timeout: float = 120.0):
        session = TimeoutSession(timeout)
        if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
            session.auth = (settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD)
        client = DICOMwebClientX(url=url, session=session, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                                 wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                                 stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
        cache = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip() or None
        self.modalities = tuple(modalities)
        super().__init__(client=client, search_filter={"Modality": self.modalities[0]}, cache_path=cache,
                         fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME,
                         convert_to_nifti=settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI)

    @cached(cache=TTLCache(maxsize=16, ttl=settings.MONAI_LABEL_DICOMWEB_CACHE_EXPIRY))
    def list_images(self) -> list[str]:
        series: list[str] = []
        for modality in self.modalities:
            for found in self._client.search_for_series(search_filters={"Modality": modality}):
                uid = str(Dataset.from_json(found)["SeriesInstanceUID"].value)
                if uid not in series:
                    series.append(uid)
        logger.info("DICOMweb: %d series of modality %s", len(series), "/".join(self.modalities))
        return series
