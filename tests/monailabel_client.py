"""Calls a running MedCF MONAI Label server with MONAI Label's own client class.

Run by tests/test_monailabel.py with the server environment's Python
(``.venv-monailabel``: the client ships with ``monailabel``, which MedCF's environment
cannot hold). One action per call; prints one JSON document.

    python monailabel_client.py URL info
    python monailabel_client.py URL next_sample STRATEGY
    python monailabel_client.py URL infer MODEL IMAGE_ID PARAMS_JSON OUT_FILE
    python monailabel_client.py URL save_label IMAGE_ID LABEL_FILE
    python monailabel_client.py URL train MODEL PARAMS_JSON

``train`` polls until the training ends, with no deadline of its own: the test that runs this
client limits the server's work by its CPU time (tests/waiting.py), not by the clock.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time

from monailabel.client import MONAILabelClient


def main(argv: list[str]) -> dict:
    url, action, *rest = argv
    # Its own folder for results: the client names them as the server does, and on one machine
    # the server's own copy (deleted once sent) must not be the same file.
    client = MONAILabelClient(url, tmpdir=tempfile.mkdtemp(prefix="medcf-client-"))
    if action == "info":
        return client.info()
    if action == "next_sample":
        return client.next_sample(rest[0], {})
    if action == "infer":
        model, image_id, params, out = rest
        result_file, result = client.infer(model, image_id, json.loads(params))
        if result_file:
            shutil.move(result_file, out)
        return {"file": out if result_file else None, "params": result}
    if action == "save_label":
        return client.save_label(rest[0], rest[1], tag="final")
    if action == "train":
        model, params = rest
        started = client.train_start(model, json.loads(params))
        while True:
            status = client.train_status()
            if status.get("status") not in ("SUBMITTED", "RUNNING"):
                return {"started": started, "status": status}
            time.sleep(1)
    raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), default=str))
