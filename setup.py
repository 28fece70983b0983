"""ponder-jax: data-efficient language-model pretraining in JAX/Flax.

Lower bounds only; exact, tested versions for Python 3.11 are pinned in constraints.txt
(`pip install -c constraints.txt -e .[hf,interop,test]`, which the Makefile does).
"""

from setuptools import find_packages, setup

setup(
    name="ponder-jax",
    version="0.1.0",
    description="Pondering, pause tokens, procedural warm-up and latent thoughts for JAX/Flax LMs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["ponder_jax", "ponder_jax.*"]),
    package_data={"ponder_jax.eval": ["lm_eval_tasks/*.yaml", "lm_eval_tasks/*.py"]},
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "grain>=0.2.18",
        "ml-collections>=1.1.0",
        "sentencepiece>=0.2.0",
        "absl-py>=2.1",
        "etils[epath]>=1.5",
        "numpy>=1.26",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
    ],
    extras_require={
        "hf": ["torch==2.13.0", "transformers>=4.57", "safetensors>=0.4", "tokenizers>=0.20"],
        "interop": ["seqio>=0.0.20", "tensorflow-datasets>=4.9.10", "importlib_resources>=6"],
        "test": ["pytest>=8", "pytest-xdist>=3.6", "hypothesis>=6.100", "ruff>=0.17"],
        "eval": ["lm-eval>=0.4.13"],  # the lm-evaluation-harness adapter (ponder-lm-eval)
        # XLA's TPU compiler (libtpu, ~700 MB): `ponder-aot --topology` compiles for TPU slices
        # on any host; on a TPU VM it is also the runtime.
        "tpu": ["jax[tpu]>=0.10.2"],
    },
    entry_points={
        "console_scripts": [
            "ponder-train=ponder_jax.cli:train_main",
            "ponder-convert=ponder_jax.convert.cli:main",
            "ponder-generate=ponder_jax.infer.cli:main",
            "ponder-bolt=ponder_jax.bolt.em:main",
            "ponder-sweep=ponder_jax.sweep:main",
            "ponder-aot=ponder_jax.aot:main",
            "ponder-eval=ponder_jax.eval.cli:console_main",
            "ponder-lm-eval=ponder_jax.eval.lm_eval_adapter:main",
        ],
    },
)
