"""The Slicer module's remote mode (MedCFExtension/MedCF/MedCFLib/remote.py) against MedCF's real
MONAI Label server, started as tests/test_monailabel.py starts it (its ``Server`` and ``_films``),
and its Cancel against a stand-in server that answers late."""

from __future__ import annotations

import io
import json
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tests import waiting
from tests.orthanc_server import free_port
from tests.test_monailabel import WORK_CPU_BUDGET, Server, _films
from tests.test_slicer_mrml import _scenario

MODULE_DIR = Path(__file__).resolve().parents[1] / "MedCFExtension" / "MedCF"
sys.path.insert(0, str(MODULE_DIR))

from MedCFLib.process import CANCELLED, FAILED, FINISHED, RUNNING  # noqa: E402
from MedCFLib.remote import RemoteEdit, RemoteError, server_info  # noqa: E402

OPTIONS = {"finding": "pleural_effusion", "action": "add", "side": "left", "zone": "-", "method": "regulated",
           "seed": "3"}


def _follow(run: RemoteEdit, server: Server) -> tuple[str, float, str]:
    """Wait for a remote edit while the server works on it (tests/waiting.py), not for a fixed time."""
    waiting.wait_until(lambda: run.poll()[0] != RUNNING, watch=[server.process.pid], cpu_budget=WORK_CPU_BUDGET,
                       what="the remote edit", interval=0.2)
    return run.poll()


@pytest.mark.integration
def test_remote_edit_on_the_monai_label_server_lands_like_a_local_one(tmp_path: Path) -> None:
    from tests import model_fixtures

    films = _films(tmp_path / "studies")
    tiny = model_fixtures.make_default_model(tmp_path / "tiny")
    conf = {"models_dir": str(tmp_path / "models"), "generator": str(tiny)}
    with Server(str(tmp_path / "studies"), conf, tmp_path / "server.log") as server:
        assert "medcf_counterfactual" in server_info(server.url)["models"]
        out = tmp_path / "remote"
        run = RemoteEdit(server.url, films["a"], OPTIONS, out).start()
        state, percent, message = _follow(run, server)
        assert (state, percent) == (FINISHED, 100.0), (message, server.log.read_text()[-2000:])
        record = json.loads((out / "edit.json").read_text())
        assert (record["finding"], record["action"], record["side"], record["method"], record["seed"]) == (
            "pleural_effusion", "add", "left", "regulated", 3)
        assert record["extra"]["anatomy"]["source"] == "segmenter"  # the server's own segmenter
        files = run.result()
        assert Path(files["image"]) == out / "counterfactual.nii.gz" and Path(files["provenance"]).is_file()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".remote-")]  # no staging left

        # refusals come back as one line: medcf's own, and the version check's
        bad = RemoteEdit(server.url, films["a"], {"finding": "nodule", "action": "add"}, tmp_path / "bad").start()
        state, _, message = _follow(bad, server)
        assert state == FAILED and message == ("MONAI Label server: medcf: error: --side is needed for nodule "
                                               "(left, right or bilateral)")
        old = RemoteEdit(server.url, films["a"], OPTIONS, tmp_path / "old", api_version="0.7.0").start()
        state, _, message = _follow(old, server)
        assert state == FAILED and "this server runs MONAI Label 0.8.5" in message and "\n" not in message
        assert not (tmp_path / "bad").exists() and not (tmp_path / "old").exists()

    # the folder the server sent is what the module loads: a result node on the film's geometry
    facts = _scenario("result", films["a"], out, tmp_path / "scene")
    for key in ("origin", "spacing", "ijk_to_ras"):
        np.testing.assert_array_equal(facts["result"][key], facts["input"][key], err_msg=key)
    assert facts["attributes"]["MedCF.AnatomySource"] == "segmenter"
    assert facts["attributes"]["MedCF.WeightsSHA256"] == record["weights_sha256"]


def test_remote_refuses_bad_addresses_and_folders_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match=r"^cannot reach a MONAI Label server at http://127\.0\.0\.1:\d+"):
        server_info(f"http://127.0.0.1:{free_port()}", timeout=5)
    film = tmp_path / "film.nii.gz"
    film.write_bytes(b"x")
    with pytest.raises(RemoteError, match="is not a server address"):
        RemoteEdit("localhost:8000", film, OPTIONS, tmp_path / "out").start()
    with pytest.raises(RemoteError, match="no such file"):
        RemoteEdit("http://127.0.0.1:1", tmp_path / "missing.dcm", OPTIONS, tmp_path / "out").start()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("earlier")
    with pytest.raises(RemoteError, match="is not empty"):
        RemoteEdit("http://127.0.0.1:1", film, OPTIONS, tmp_path / "full").start()


class _LateServer(BaseHTTPRequestHandler):
    """Serves /info/ with medcf_counterfactual and answers an infer only when told to, with a
    valid edit zip: what a busy MONAI Label server does."""

    received = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:  # noqa: N802
        self._send(json.dumps({"name": "stand-in", "models": {"medcf_counterfactual": {}}}).encode())

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.set()
        type(self).release.wait(30)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("edit.json", json.dumps({"files": {"image": "counterfactual.nii.gz"}}))
            archive.writestr("counterfactual.nii.gz", b"not really")
        self._send(buffer.getvalue())

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_cancelled_remote_edit_keeps_nothing_the_server_sends_later(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LateServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        film = tmp_path / "film.nii.gz"
        film.write_bytes(b"a film")
        out = tmp_path / "out"
        run = RemoteEdit(f"http://127.0.0.1:{server.server_address[1]}", film, OPTIONS, out).start()
        assert _LateServer.received.wait(30) and run.poll()[0] == RUNNING
        run.cancel()
        assert run.poll()[0] == CANCELLED
        _LateServer.release.set()  # the server answers after all
        assert run.wait(30)[0] == CANCELLED
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["film.nii.gz"]
        with pytest.raises(RuntimeError, match="cancelled"):
            run.result()
    finally:
        server.shutdown()
        server.server_close()
