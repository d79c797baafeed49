"""MedCF on Ray (``--ray local|ADDRESS``): a pool of actors that each hold one editor
(:mod:`.worker`), a cluster connection and a bounded scheduler (:mod:`.cluster`), and the
engines that ``medcf batch`` (:mod:`.batch`) and ``medcf pairs`` (:mod:`.pairs`) plug in.

Only these modules import Ray, and only when a command is given ``--ray``: the plain
commands never import it. The submodules are not imported here.
"""
