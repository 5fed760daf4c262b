"""fairseq-qbert: quantization-aware fine-tuning of RoBERTa with knowledge distillation, as a fairseq plugin."""
from setuptools import find_packages, setup

setup(
    name="fairseq-qbert",
    version="0.1.0",
    description=("fairseq plugin: PACT/LSQ/Q8BERT/TWN quantization-aware fine-tuning of RoBERTa "
                 "with TernaryBERT-style KD, PTQ calibration and integer ONNX export"),
    packages=find_packages(include=["qbert", "qbert.*", "fairseq_qbert", "fairseq_qbert.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=[
        # fairseq 0.12.2 does not import on Python 3.11; fairseq-fixed is its 3.11 build (imports as `fairseq`).
        "fairseq-fixed==0.12.3.1",
        "torch==2.13.0",
        "numpy>=1.26,<3",
        "sacremoses==0.2.0",
        "tensorboardX==2.6.5",
        # qbert-export / qbert-predict: packed weights, int8 ONNX Runtime models
        "onnx==1.23.2",
        "onnxruntime==1.32.0",
        "safetensors==0.8.0",
    ],
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "execnet==2.1.2", "ruff==0.17.6"],
        "plots": ["matplotlib==3.11.2"],
        # Hugging Face interop (qbert-import-hf / qbert-export-hf); the core plugin does not need it
        "hf": ["transformers==5.24.0", "tokenizers==0.23.3", "safetensors==0.8.0"],
    },
    entry_points={
        "console_scripts": [
            "qbert-mini-glue=qbert.data.mini_glue:cli_main",
            "qbert-mini-corpus=qbert.data.mini_corpus:cli_main",
            "qbert-preprocess-glue=fairseq_qbert.data.preprocess_glue:cli_main",
            "qbert-user-dir=fairseq_qbert.user_dir:cli_main",
            "qbert-import-hf=qbert.hf.cli:import_main",
            "qbert-export-hf=qbert.hf.cli:export_main",
            "qbert-calibrate=fairseq_qbert.calib.cli:cli_main",
            "qbert-length-search=fairseq_qbert.lat.search_cli:cli_main",
            "qbert-export=fairseq_qbert.export.cli:cli_main",
            "qbert-predict=qbert.export.predict:cli_main",
            "qbert-augment=fairseq_qbert.augment.cli:cli_main",
        ]
    },
)
