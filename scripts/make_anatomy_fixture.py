"""Write tests/data/anatomy_heldout.npz: simulated radiographs with exact organ masks from
held-out seeds (never used in training), for the anatomy tests. Needs the chest CT
(`medcf data fetch-ct`)."""

from pathlib import Path

from medcf.training.anatomy_data import HELD_OUT_SEED, render_set

FIRST_SEED = HELD_OUT_SEED + 50_000  # apart from the sets the training run checks itself on
PATIENTS = 3

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "tests" / "data" / "anatomy_heldout.npz"
    data = render_set(PATIENTS, FIRST_SEED, 256, progress=False)
    print(out, len(data), [v.value for v in data.views])
    data.save(out)
