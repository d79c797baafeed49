"""A counterfactual refused outside the model's domain, as one line a MONAI Label client can act on.

``medcf edit`` refuses a film outside the loaded model's training domain in one line and exits
2 (the worker's HTTP 422); that line names its ways on as command-line flags. A client of this
server sets params, not flags, and cannot pick the server's model, so the line it gets keeps
MedCF's reason and names the same three ways on in the client's terms: the param
``"method": "insert"``, the param ``"allow_out_of_domain": true``, or a server started with a
model trained on real radiographs (``-c generator DIR``). Nothing here imports medcf or MONAI Label.
"""

from __future__ import annotations

#: the words every domain refusal of ``medcf edit`` holds (medcf.domain.assess.refusal_line)
REFUSAL_MARK = "outside the model's training domain"
#: where MedCF's own list of ways on (as flags) begins in its line
WAYS_ON = " Ways on: "
ERROR_PREFIX = "medcf: error: "
#: the param that writes an edit outside the domain anyway, and the method that needs no diffusion model
ALLOW_PARAM = "allow_out_of_domain"
MODEL_FREE_METHOD = "insert"


def client_line(detail: str) -> str | None:
    """The one line a client gets for ``medcf edit``'s refusal ``detail``; None when ``detail``
    is not a domain refusal (it then goes to the client as MedCF wrote it)."""
    if REFUSAL_MARK not in (detail or ""):
        return None
    reason = detail.strip()
    if reason.startswith(ERROR_PREFIX):
        reason = reason[len(ERROR_PREFIX):]
    reason = reason.split(WAYS_ON, 1)[0].rstrip()
    return (f"{reason} Ways on: set param \"method\": \"{MODEL_FREE_METHOD}\" (inserts a simulated finding, "
            f"needs no diffusion model), set param \"{ALLOW_PARAM}\": true (written, and marked outside the "
            f"domain), or use a server started with a model trained on real radiographs (-c generator DIR)")
