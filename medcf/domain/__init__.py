"""How far a film lies from the loaded model's training films (docs/models.md): the model's
own evidence (reconstruction and denoising error inside the lungs) against its quantiles on
the model's held-out training films, so that an edit outside the domain is refused or
marked rather than answered with confidence."""
