"""Edit methods as registered plugins (:mod:`medcf.editing.methods.base`): MedCF's own
(``regulated``, ``steer``, ``regulated+steer``), ``causal`` and the counterfactual
benchmark's baselines, and ``insert`` (a physically simulated finding added to the native
film, :class:`FilmEditMethod`). Importing this package registers them all; a further
method registers itself the same way, with :func:`register`."""

# importing registers them, MedCF's own first (the order method_names() lists them in)
from medcf.editing.methods import guided  # noqa: F401, I001
from medcf.editing.methods import causal  # noqa: F401, I001
from medcf.editing.methods import baselines  # noqa: F401, I001
from medcf.editing.methods import insert  # noqa: F401, I001
from medcf.editing.methods.base import (EditMethod, FilmEditMethod, FilmPass, MethodPass, Need, film_methods,
                                        get_method, method_names, register, unregister, uses_model)

__all__ = ["EditMethod", "FilmEditMethod", "FilmPass", "MethodPass", "Need", "film_methods", "get_method",
           "method_names", "register", "unregister", "uses_model"]
