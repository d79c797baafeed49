"""Fetch studies from, and send synthetic series to, a DICOM server.

Two protocols, one addressing scheme that users can paste:

* DIMSE: ``dicom://CALLED_AET@host:port/<StudyInstanceUID>`` or
  ``dicom://CALLED_AET@host:port/?AccessionNumber=…`` (also PatientID). Query
  by C-FIND, retrieve by C-GET (no listening port needed on our side), send by
  C-STORE; pynetdicom does the networking.
* DICOMweb: ``http(s)://host:port/<root>/studies/<StudyInstanceUID>`` or
  ``…/studies?AccessionNumber=…``. QIDO-RS, WADO-RS (original transfer syntax)
  and STOW-RS through dicomweb-client.

Retrieved instances land in a cache folder (one per study) and are then read
like any other folder, so the rest of MedCF never knows where a study came
from. Sending refuses objects that are not marked Synthetic Data = YES unless
asked: MedCF writes synthetic series back, it does not move clinical data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pydicom
from pydicom.dataset import Dataset

from medcf.cache import cache_dir
from medcf.errors import InputError, MedCFError, OutputError
from medcf.io.atomic import write_new_dataset
from medcf.io.checks import ACCEPTED_SOP_CLASSES

DEFAULT_CALLING_AET = "MEDCF"
# Study-level matching keys an address may carry. Batch and pull take an address without a
# Study Instance UID as a query and fetch every study it matches (StudyDate takes a DICOM
# range, 20240101-20241231); `medcf inspect` wants it to match exactly one.
QUERY_KEYS = ("StudyInstanceUID", "AccessionNumber", "PatientID", "StudyDate", "ModalitiesInStudy")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# Transfer syntaxes we accept when the server sends (C-GET) and offer when we send.
_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
]


class NetworkError(MedCFError):
    """The DICOM server could not be reached or refused the request."""


@dataclass(frozen=True)
class RemoteStudy:
    """A study on a DICOM server, named by UID or by a query that finds exactly one."""

    protocol: str  # "dimse" or "dicomweb"
    host: str
    port: int | None
    called_aet: str | None = None  # DIMSE only
    base_url: str | None = None  # DICOMweb only: the service root
    query: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        where = self.base_url or f"{self.called_aet}@{self.host}:{self.port}"
        return f"{where} {' '.join(f'{k}={v}' for k, v in self.query.items())}"


def is_remote(text: str) -> bool:
    return str(text).lower().startswith(("dicom://", "http://", "https://"))


def _dimse_node(text: str, expected: str) -> RemoteStudy:
    """The server part of a dicom://AET@host:port address (no query yet)."""
    parts = urlsplit(text)
    if parts.scheme != "dicom" or not parts.username or not parts.hostname or not parts.port:
        raise InputError(f"{text} is not a DICOM address; expected {expected}")
    return RemoteStudy("dimse", parts.hostname, parts.port, called_aet=parts.username)


def parse_remote(text: str) -> RemoteStudy:
    """Parse a study address; raise InputError naming the accepted forms."""
    forms = ("dicom://AET@host:port/<StudyInstanceUID>, dicom://AET@host:port/?AccessionNumber=…, "
             "http(s)://host[:port]/<dicom-web root>/studies/<StudyInstanceUID>")
    parts = urlsplit(text)
    query = {k: v for k, v in parse_qsl(parts.query)}
    unknown = sorted(set(query) - set(QUERY_KEYS))
    if unknown:
        raise InputError(f"unknown query key(s) {', '.join(unknown)} in {text}; use {', '.join(QUERY_KEYS)}")
    if parts.scheme == "dicom":
        uid = parts.path.strip("/")
        if uid:
            query["StudyInstanceUID"] = uid
        remote = replace(_dimse_node(text, forms), query=query)
    elif parts.scheme in ("http", "https"):
        match = re.match(r"^(?P<root>.*?)/studies(?:/(?P<uid>[^/]+))?/?$", parts.path)
        if not match:
            raise InputError(f"{text} is not a DICOMweb study address; expected {forms}")
        if match.group("uid"):
            query["StudyInstanceUID"] = match.group("uid")
        root = f"{parts.scheme}://{parts.netloc}{match.group('root')}"
        remote = RemoteStudy("dicomweb", parts.hostname or "", parts.port, base_url=root, query=query)
    else:
        raise InputError(f"{text} is not a study address; expected {forms}")
    if not remote.query:
        raise InputError(f"{text} names no study; add a StudyInstanceUID or ?AccessionNumber=… / ?PatientID=…")
    uid = remote.query.get("StudyInstanceUID")
    if uid is not None and not _UID.match(uid):
        raise InputError(f"{uid!r} is not a valid Study Instance UID")
    return remote


def default_cache_dir() -> Path:
    return cache_dir("studies")


# --- DIMSE -------------------------------------------------------------------


def _association(remote: RemoteStudy, calling_aet: str, contexts, roles=(), handlers=()):
    from pynetdicom import AE

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for context in contexts:
        ae.add_requested_context(*context)
    try:
        assoc = ae.associate(remote.host, remote.port, ae_title=remote.called_aet, ext_neg=list(roles),
                             evt_handlers=list(handlers))
    except (OSError, ValueError) as exc:
        raise NetworkError(f"cannot reach {remote.called_aet}@{remote.host}:{remote.port}: {exc}") from None
    if not assoc.is_established:
        raise NetworkError(
            f"{remote.called_aet}@{remote.host}:{remote.port} did not accept an association from "
            f"{calling_aet} (server down, wrong AE title, or {calling_aet} not configured there)"
        )
    return assoc


def _dimse_find_studies(remote: RemoteStudy, calling_aet: str) -> list[str]:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = remote.query.get("StudyInstanceUID", "")
    for key in QUERY_KEYS[1:]:
        setattr(identifier, key, remote.query.get(key, ""))
    assoc = _association(remote, calling_aet, [(FIND,)])
    found: list[str] = []
    try:
        for status, match in assoc.send_c_find(identifier, FIND):
            if status and status.Status in (0xFF00, 0xFF01) and match is not None:
                found.append(str(match.StudyInstanceUID))
            elif status and status.Status not in (0x0000, 0xFF00, 0xFF01):
                raise NetworkError(f"C-FIND failed with status 0x{status.Status:04X} at {remote.label}")
    finally:
        assoc.release()
    return sorted(set(found))


def _save_instance(ds: Dataset, folder: Path) -> Path | None:
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    if path.exists():
        return None  # cached from an earlier fetch
    return write_new_dataset(path, ds)


def _store_handler(folder: Path, received: list[Path | None]):
    """The C-STORE handler of a retrieve (C-GET or C-MOVE): each instance the server sends is
    saved into ``folder`` and listed in ``received``."""

    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(_save_instance(ds, folder))
        return 0x0000

    return on_store


def _dimse_get_study(remote: RemoteStudy, study_uid: str, calling_aet: str, folder: Path) -> int:
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    received: list[Path | None] = []
    on_store = _store_handler(folder, received)

    storage = list(ACCEPTED_SOP_CLASSES)
    contexts = [(GET,)] + [(uid, _TRANSFER_SYNTAXES) for uid in storage]
    roles = [build_role(uid, scp_role=True) for uid in storage]
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    assoc = _association(remote, calling_aet, contexts, roles, [(evt.EVT_C_STORE, on_store)])
    try:
        final = None
        for status, _ in assoc.send_c_get(identifier, GET):
            final = status
        if final is None or final.Status not in (0x0000, 0xB000):
            code = f"0x{final.Status:04X}" if final is not None else "none"
            raise NetworkError(f"C-GET of study {study_uid} from {remote.label} failed (status {code})")
    finally:
        assoc.release()
    return len(received)


# --- DICOMweb ---------------------------------------------------------------


def _dimse_move_study(remote: RemoteStudy, study_uid: str, calling_aet: str, folder: Path, port: int) -> int:
    """C-MOVE, for servers that do not offer C-GET: we listen as a Storage SCP on ``port``
    for the duration of the move, and ask the server to send the study to ``calling_aet``,
    which the server must know at this host and ``port`` (its modality list)."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

    received: list[Path | None] = []
    on_store = _store_handler(folder, received)

    listener = AE(ae_title=calling_aet)
    for uid in ACCEPTED_SOP_CLASSES:
        listener.add_supported_context(uid, _TRANSFER_SYNTAXES)
    try:
        server = listener.start_server(("", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    except OSError as exc:
        raise NetworkError(f"cannot listen on port {port} for C-MOVE: {exc}") from None
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_uid
        assoc = _association(remote, calling_aet, [(MOVE,)])
        try:
            final = None
            for status, _ in assoc.send_c_move(identifier, calling_aet, MOVE):
                final = status
            if final is None or final.Status not in (0x0000, 0xB000):
                code = f"0x{final.Status:04X}" if final is not None else "none"
                raise NetworkError(f"C-MOVE of study {study_uid} from {remote.label} to {calling_aet} on port {port} "
                                   f"failed (status {code}; does the server know {calling_aet} at this host and port?)")
        finally:
            assoc.release()
    finally:
        server.shutdown()
    return len(received)


def _web_client(base_url: str):
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=base_url, timeout=60)
    # dicomweb-client retries every failure, refused connections included, up to
    # 5 times with 2-16 s waits (30 s for a typo). Three quick tries still ride
    # out a busy server's 503 without making a wrong address feel like a hang.
    client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=250)
    return client


def _web_call(what: str, base_url: str, call):
    import requests

    try:
        return call()
    except requests.exceptions.HTTPError as exc:
        raise NetworkError(f"{what} at {base_url} failed: HTTP {exc.response.status_code}") from None
    except requests.exceptions.RequestException as exc:
        raise NetworkError(f"cannot reach {base_url}: {type(exc).__name__}") from None


def _web_find_studies(remote: RemoteStudy) -> list[str]:
    client = _web_client(remote.base_url)
    results = _web_call("QIDO-RS study search", remote.base_url,
                        lambda: client.search_for_studies(search_filters=dict(remote.query)))
    return sorted({str(Dataset.from_json(r).StudyInstanceUID) for r in results})


def _web_get_study(remote: RemoteStudy, study_uid: str, folder: Path) -> int:
    client = _web_client(remote.base_url)
    # Ask for the stored transfer syntax ("*"): no lossy transcoding on the way.
    datasets = _web_call("WADO-RS retrieve", remote.base_url,
                         lambda: client.retrieve_study(study_uid, media_types=(("application/dicom", "*"),)))
    for ds in datasets:
        _save_instance(ds, folder)
    return len(datasets)


# --- public API -------------------------------------------------------------


def find_studies(remote: RemoteStudy, calling_aet: str = DEFAULT_CALLING_AET) -> list[str]:
    """Study Instance UIDs on the server that match ``remote.query``."""
    if remote.protocol == "dimse":
        return _dimse_find_studies(remote, calling_aet)
    return _web_find_studies(remote)


def study_address(remote: RemoteStudy, study_uid: str) -> str:
    """The address of one study on ``remote``'s server (what a query's match is fetched as)."""
    if remote.protocol == "dimse":
        return f"dicom://{remote.called_aet}@{remote.host}:{remote.port}/{study_uid}"
    return f"{remote.base_url}/studies/{study_uid}"


def fetch_study(remote: RemoteStudy | str, cache_dir: str | Path | None = None,
                calling_aet: str = DEFAULT_CALLING_AET, move_port: int | None = None) -> Path:
    """Retrieve the one study ``remote`` names into the cache; return its folder.

    Instances already in the cache are kept, never rewritten. A query that
    matches no study, or several, is an InputError that says so. DIMSE retrieves by
    C-GET, or by C-MOVE to ``calling_aet`` listening on ``move_port`` when given.
    """
    if isinstance(remote, str):
        remote = parse_remote(remote)
    matches = find_studies(remote, calling_aet)
    if not matches:
        raise InputError(f"no study matches {remote.label}")
    if len(matches) > 1:
        raise InputError(f"{len(matches)} studies match {remote.label}; name one by StudyInstanceUID: "
                         + ", ".join(matches[:5]))
    study_uid = matches[0]
    folder = Path(cache_dir or default_cache_dir()) / re.sub(r"[^A-Za-z0-9_.-]", "_", remote.host or "server") / study_uid
    folder.mkdir(parents=True, exist_ok=True)
    if remote.protocol == "dimse" and move_port is not None:
        _dimse_move_study(remote, study_uid, calling_aet, folder, move_port)
    elif remote.protocol == "dimse":
        _dimse_get_study(remote, study_uid, calling_aet, folder)
    else:
        _web_get_study(remote, study_uid, folder)
    if not any(folder.glob("*.dcm")):
        raise InputError(f"study {study_uid} at {remote.label} holds no instance MedCF can receive "
                         "(only CR, DX and Secondary Capture images are retrieved)")
    return folder


def resolve_inputs(inputs: Iterable[str], cache_dir: str | Path | None = None,
                   calling_aet: str = DEFAULT_CALLING_AET) -> list[str]:
    """Replace every study address among ``inputs`` by the folder it was fetched to."""
    return [str(fetch_study(item, cache_dir, calling_aet)) if is_remote(item) else item for item in inputs]


@dataclass(frozen=True)
class SendReport:
    sent: int
    target: str


def _datasets_to_send(paths: Sequence[str | Path], allow_non_synthetic: bool) -> list[tuple[Path, Dataset]]:
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if not path.exists():
            raise InputError(f"no such file or directory: {path}")
        files.extend(sorted(p for p in path.rglob("*.dcm")) if path.is_dir() else [path])
    if not files:
        raise InputError("nothing to send: no .dcm files under the given paths")
    out = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file stops the send before it starts
            raise InputError(f"{path} is not a readable DICOM file: {exc}") from None
        if str(ds.get("SyntheticData", "")).upper() != "YES" and not allow_non_synthetic:
            raise OutputError(f"{path} is not marked Synthetic Data = YES; MedCF only sends synthetic "
                              "series back (use --allow-non-synthetic to send it anyway)")
        out.append((path, ds))
    return out


def send(paths: Sequence[str | Path], target: str, calling_aet: str = DEFAULT_CALLING_AET,
         allow_non_synthetic: bool = False) -> SendReport:
    """Store DICOM files on a server (C-STORE or STOW-RS). All files are read and
    checked before the first one is sent."""
    items = _datasets_to_send(paths, allow_non_synthetic)
    parts = urlsplit(target)
    if parts.scheme == "dicom":
        remote = _dimse_node(target, "dicom://AET@host:port")
        contexts = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in items})
        by_class: dict[str, list[str]] = {}
        for sop_class, syntax in contexts:
            by_class.setdefault(sop_class, []).append(syntax)
        assoc = _association(remote, calling_aet, [(k, v) for k, v in by_class.items()])
        try:
            for path, ds in items:
                status = assoc.send_c_store(ds)
                if not status or status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):
                    code = f"0x{status.Status:04X}" if status else "no response"
                    raise NetworkError(f"C-STORE of {path.name} to {remote.label} failed ({code})")
        finally:
            assoc.release()
    elif parts.scheme in ("http", "https"):
        base = target.rstrip("/")
        base = base[: -len("/studies")] if base.endswith("/studies") else base
        client = _web_client(base)
        _web_call("STOW-RS", base, lambda: client.store_instances([ds for _, ds in items]))
    else:
        raise InputError(f"{target} is not a DICOM server address (dicom://AET@host:port or http(s)://…/dicom-web)")
    return SendReport(sent=len(items), target=target)
