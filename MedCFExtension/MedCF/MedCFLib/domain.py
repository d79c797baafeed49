"""A refused edit outside the model's domain, and the three ways on it offers (no Slicer, no Qt).

``medcf edit`` refuses a film that lies outside the loaded model's training domain in one line
on stderr and exits 2, writing nothing (medcf.domain.assess.refusal_line). The panel shows that
line as it is, not as a generic failure, and offers its three ways on as actions:

- :attr:`WayOn.ALLOW`: the same edit with ``--allow-out-of-domain`` (written, and marked outside the
  domain in edit.json, the panel and the DICOM);
- :attr:`WayOn.INSERT`: the same edit with ``--method insert`` (a simulated finding inserted into the
  film, no diffusion model, so the model's domain does not apply);
- :attr:`WayOn.MODEL`: the same edit with ``--model DIR``, a model trained on real radiographs, which
  the user chooses in the panel's Model folder.

The line is recognised by the words the library's refusal always holds (a test keeps them equal
to ``refusal_line``'s), because this package loads without the library.
"""

from __future__ import annotations

from enum import Enum

#: the exit status of a refusal the user can act on (medcf.errors.InputError)
REFUSAL_EXIT = 2
#: words every domain refusal holds (medcf.domain.assess.refusal_line)
REFUSAL_MARK = "outside the model's training domain"
#: the prefixes before the line: medcf's command line, and MedCFLib.remote's for a server's answer
ERROR_PREFIXES = ("MONAI Label server: ", "medcf: error: ")
#: the options the ways on set (``medcf edit --allow-out-of-domain``, ``--method``, ``--model``)
ALLOW_OPTION = "allow-out-of-domain"
METHOD_OPTION = "method"
MODEL_OPTION = "model"
MODEL_FREE_METHOD = "insert"


class WayOn(str, Enum):
    """The three ways on from a domain refusal, as the panel offers them."""

    ALLOW = "allow out of domain"
    INSERT = "method insert"
    MODEL = "another model"


def domain_refusal(returncode: int | None, message: str) -> str | None:
    """The refusal line to show (without medcf's ``medcf: error:`` prefix) when a run ended with
    a domain refusal (exit 2 and the refusal's words); None for any other ending."""
    if returncode != REFUSAL_EXIT or REFUSAL_MARK not in (message or ""):
        return None
    line = message.strip()
    for prefix in ERROR_PREFIXES:
        if line.startswith(prefix):
            line = line[len(prefix):]
    return line


def retry_options(options: dict[str, object], way: WayOn, model_dir: str | None = None) -> dict[str, object]:
    """``options`` of the refused edit changed to take ``way``: the flag set, the method switched to
    insert (the model's domain is then not assessed, so no flag is kept), or ``model_dir`` given as
    ``--model``. A model way with no folder chosen is a one-line ValueError the panel shows."""
    retry = dict(options)
    if way is WayOn.ALLOW:
        retry[ALLOW_OPTION] = True
    elif way is WayOn.INSERT:
        retry[METHOD_OPTION] = MODEL_FREE_METHOD
        retry.pop(ALLOW_OPTION, None)
    else:
        if not (model_dir or "").strip():
            raise ValueError("choose a model trained on real radiographs in Model folder, then press Edit")
        retry[MODEL_OPTION] = model_dir.strip()
    return retry


def ways_on_text(line: str, model_choice: bool = True) -> str:
    """The panel's status text for a refusal: the line, then what each action does."""
    model = ("Another model: choose a folder of a model trained on real radiographs in Model folder, then Edit."
             if model_choice else "Another model: the server's model is set when it starts (-c generator DIR).")
    return (f"Refused: {line}\nWays on: 'Edit anyway' re-runs with --allow-out-of-domain (marked outside the "
            f"domain); 'Use insert' re-runs with --method insert (no diffusion model). {model}")
