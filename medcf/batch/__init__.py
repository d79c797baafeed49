"""Many studies × many edits (``medcf batch``): plan (:mod:`.plan`), manifest
(:mod:`.manifest`), resume and send (:mod:`.runner`).

One edit is one call of :func:`medcf.editing.api.edit_file`, the function ``medcf edit``
uses; this package only decides what to run, publishes each result atomically and keeps
the manifest that makes a run resumable. Nothing here imports Ray: ``--ray`` plugs the
engine of :mod:`medcf.onray.batch` into :func:`.runner.run_batch`. The submodules are
not imported here, so that ``medcf --help`` stays light.
"""
