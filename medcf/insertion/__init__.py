"""Physics-grounded lesion insertion (``--method insert``, docs/insertion.md).

A finding the world models exactly (a change of density inside the chest CT) is taken as a
projected line-integral channel, registered from the world's projected anatomy onto *this*
film's lungs and heart, and added in the film's own attenuation domain. It needs no
diffusion model, so it is the edit that can be right on a film the model has never seen.
"""
