from setuptools import find_packages, setup

setup(
    name="gan-pipeline",
    version="0.1.0",
    description="Luigi pipeline from image collections to trained GAN inpainters and generators",
    packages=find_packages(include=["pipeline", "pipeline.*", "ganmodels", "ganmodels.*"]),
    package_data={"pipeline.studio": ["static/*"]},
    python_requires=">=3.10",
    install_requires=[
        "luigi>=3.5",
        "torch>=2.3",
        "torchvision>=0.18",
        "torchmetrics>=1.4",
        # FID through torchmetrics, from a local Inception weights file ([evaluation] in luigi.cfg).
        "torch-fidelity>=0.3",
        "boto3>=1.34",
        "pillow>=10.1",
        "simplejpeg>=1.7",
        # SIMD Lanczos resize (pipeline/ingestion/decode.py); where no wheel exists Pillow resizes alone.
        "cykooz.resizer>=4.0; platform_machine == 'x86_64' or platform_machine == 'AMD64' or sys_platform == 'darwin'",
        "pandas>=2.0",
        "numpy>=1.26",
        "scikit-image>=0.22",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "opencv-python-headless>=4.8",
        "scipy>=1.10",
        "requests>=2.31",
        "gdown>=5.0",
        "kaggle>=1.6",
        # python -m pipeline serve (the studio) and the TensorBoard event files of training runs
        "fastapi>=0.110",
        "uvicorn>=0.29",
        "python-multipart>=0.0.9",
        "tensorboard>=2.16",
    ],
    entry_points={"console_scripts": ["gan-pipeline-distributed = pipeline.training.worker:main"]},
    extras_require={
        # playwright drives the system's Chromium (tests/test_studio.py); it never downloads a browser there
        "test": ["pytest>=8.0", "moto[server]>=5.0", "playwright>=1.44"],
    },
)
