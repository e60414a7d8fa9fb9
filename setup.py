"""Install cab_bench; every setting comes from settings.ini (nbdev 2's single source of truth)."""
import shutil
from configparser import ConfigParser
from pathlib import Path

import setuptools
from setuptools.command.build_py import build_py

cfg = ConfigParser(delimiters=["="])
cfg.read(Path(__file__).parent / "settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]

licenses = {"apache2": ("Apache Software License 2.0", "OSI Approved :: Apache Software License")}
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable"]
py_versions = ["3.10", "3.11", "3.12", "3.13"]
lic = licenses[cfg["license"]]

requirements = cfg.get("requirements", "").split()
dev_requirements = cfg.get("dev_requirements", "").split()
cuda_requirements = cfg.get("cuda_requirements", "").split()

class BuildWithTeachers(build_py):
    "Build the package with the bundled teachers (data/teachers) inside it, as cab_bench/data/teachers: any install has them."
    def run(self):
        super().run()
        src = Path(__file__).parent / "data" / "teachers"
        if src.is_dir():
            dst = Path(self.build_lib) / cfg["lib_name"] / "data" / "teachers"
            if dst.exists(): shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.tmp"))


setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    license=lic[0],
    url=cfg["git_url"],
    keywords=cfg["keywords"],
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"])],
        "Intended Audience :: " + cfg["audience"],
        "License :: " + lic[1],
        "Natural Language :: " + cfg["language"],
    ] + ["Programming Language :: Python :: " + v for v in py_versions[py_versions.index(cfg["min_python"]):]],
    packages=setuptools.find_packages(include=[cfg["lib_name"], cfg["lib_name"] + ".*"]),
    include_package_data=True,
    install_requires=requirements,
    # `dev`: tests, notebooks and the browser test; `cuda`: the optional mamba-ssm / causal-conv1d kernels
    # (source builds that need nvcc and a GPU machine; cab_bench never needs them to import or pass its tests).
    extras_require={"dev": dev_requirements, "cuda": cuda_requirements},
    python_requires=">=" + cfg["min_python"],
    zip_safe=False,
    cmdclass={"build_py": BuildWithTeachers},
)
