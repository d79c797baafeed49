"""Start MedCF's MONAI Label server: ``python -m monailabel_app --studies FOLDER_OR_URL``.

Why a launcher of its own: ``make monailabel-server`` is POSIX-only (make, ``VAR=value``
prefixes, ``.venv/bin/python``). This runs anywhere the server's environment runs, Windows
included, with the settings the app needs and that a bare ``monailabel start_server`` lacks:

- DICOM films in a local folder (MONAI Label's default extensions leave ``.dcm`` out);
- MONAI Label's infer timeout raised past the counterfactual's (an edit on a CPU can take
  longer than its default 600 s);
- MedCF's Python for the worker: ``--medcf-python``, else ``$MEDCF_PYTHON``, else the
  repository's ``.venv`` (``Scripts\\python.exe`` on Windows, ``bin/python`` elsewhere).

Run it with the server environment's Python, from the repository root (or with the root on
``PYTHONPATH``), e.g. ``.venv-monailabel\\Scripts\\python -m monailabel_app --studies C:\\films``.
Settings already in the environment win over these defaults; ``-c KEY VALUE`` passes app
settings (docs/monailabel.md). ``--dryrun`` checks the arguments and writes MONAI Label's
environment file (``.env``, ``env.bat`` on Windows) in the working folder, without serving.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent
REPOSITORY = APP.parent
#: environment MONAI Label reads at import: the app's defaults (docs/monailabel.md)
SERVER_DEFAULTS = {
    "MONAI_LABEL_DATASTORE_FILE_EXT": '["*.nii.gz","*.nii","*.png","*.dcm"]',
    "MONAI_LABEL_INFER_TIMEOUT": "1900",
}


def medcf_python(given: str | None, windows: bool = sys.platform == "win32") -> str:
    """The worker's Python: the option, else ``$MEDCF_PYTHON``, else the repository's ``.venv``."""
    if given:
        return given
    if os.environ.get("MEDCF_PYTHON"):
        return os.environ["MEDCF_PYTHON"]
    venv = REPOSITORY / ".venv"
    return str(venv / "Scripts" / "python.exe" if windows else venv / "bin" / "python")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m monailabel_app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", "-s", required=True, help="a folder of films (NIfTI, PNG, DICOM) or a DICOMweb "
                                                               "URL (http://host:port/dicom-web)")
    parser.add_argument("--host", "-i", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                                                                 "0.0.0.0 opens it to other machines)")
    parser.add_argument("--port", "-p", type=int, default=8000)
    parser.add_argument("--conf", "-c", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="an app setting, e.g. -c min_labels 5 (docs/monailabel.md)")
    parser.add_argument("--medcf-python", help="the python of an environment where MedCF is installed")
    parser.add_argument("--dryrun", action="store_true", help="check and write MONAI Label's env file; do not serve")
    return parser.parse_args(argv)


def server_argv(args: argparse.Namespace) -> list[str]:
    """The ``monailabel start_server`` command line for ``args``."""
    argv = ["monailabel", "start_server", "-a", str(APP), "-s", args.studies, "-i", args.host, "-p", str(args.port)]
    for key, value in args.conf:
        argv += ["-c", key, value]
    return argv + (["--dryrun"] if args.dryrun else [])


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    python = medcf_python(args.medcf_python)
    if not Path(python).is_file():
        sys.exit(f"monailabel_app: MedCF's Python not found at {python}: run `make install` in {REPOSITORY}, or pass "
                 "--medcf-python (or set MEDCF_PYTHON) to the python of an environment where MedCF is installed")
    os.environ["MEDCF_PYTHON"] = python
    for key, value in SERVER_DEFAULTS.items():
        os.environ.setdefault(key, value)
    sys.argv = server_argv(args)
    from monailabel.main import Main  # after the environment is set: MONAI Label reads it at import

    Main().run()


if __name__ == "__main__":
    main()
