"""The product's command-line verbs, one thin module each (parsing only; each calls the library).

``edit``, ``pairs``, ``steer-vectors``, ``demo`` (:mod:`.edit`); ``batch``, ``pull`` (:mod:`.batch`);
``segment`` and the anatomy score (:mod:`.segment`); ``generate`` and ``model info|check|package``
(:mod:`.model`); ``report parse`` (:mod:`.report`). They sit above every product package (a verb may
choose an engine, e.g. Ray, for a library function), and below the lab, whose verbs
(``train``, ``bench``, ``phantom``, ``data``) live in the lab's own packages.
"""
