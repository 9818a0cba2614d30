"""Packaging for keras-lightnets (import name `keras_lightnets`)."""

import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithManifest(build_py):
    """Ships the top-level weights_manifest.json inside the package."""

    def run(self):
        super().run()
        source = os.path.join(HERE, "weights_manifest.json")
        if os.path.exists(source):
            target = os.path.join(self.build_lib, "keras_lightnets", "weights_manifest.json")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, target)


EXTRAS = {
    "optimize": ["tf-keras~=2.21.0", "tensorflow-model-optimization==0.8.1"],
    "onnx": ["tf2onnx~=1.17.0", "onnxruntime"],
    "litert": ["ai-edge-litert"],
    "dev": [
        "pytest",
        "pytest-xdist",  # the README's test command runs the suite on 2 workers
        "hypothesis",
        "ruff",
        "torch==2.13.0",
        # PaddleClas's model code is the reference of its weights' parity tests (paddleclas
        # itself goes in with --no-deps: its pins clash with TensorFlow's).
        "paddlepaddle==3.3.1",
        "jax",  # the multi-backend and distributed tests (KERAS_BACKEND=jax)
        # tests/test_notebooks.py executes examples/*.ipynb
        "nbclient",
        "nbformat",
        "ipykernel",
        "matplotlib",
    ],
}
EXTRAS["all"] = EXTRAS["optimize"] + EXTRAS["onnx"] + EXTRAS["litert"]

with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    LONG_DESCRIPTION = f.read()

setup(
    name="keras-lightnets",
    version="0.1.0",
    description="Lightweight mobile CNNs for Keras 3: ImageNet weights, compression, export.",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_lightnets", "keras_lightnets.*"]),
    py_modules=["keras_lightnets_cli"],
    package_data={"keras_lightnets": ["data/*.json"]},
    install_requires=[
        "tensorflow~=2.21.0",
        "keras>=3.12",
        "numpy",
        "h5py",
        "pillow",
        "safetensors",  # timm's weight files
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["keras-lightnets=keras_lightnets_cli:main"]},
    cmdclass={"build_py": BuildWithManifest},
)
