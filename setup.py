"""Build hook: schedules/ and tuning_logs/ stay top-level in the repository and go into the wheel as
package data, under convtvm/data/ (convtvm.targets.DATA finds them there, or beside the package in a
checkout). Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = ("schedules", "tuning_logs")


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads them from the checkout
            return
        root = Path(__file__).resolve().parent
        for name in DATA:
            shutil.copytree(root / name, Path(self.build_lib) / "convtvm" / "data" / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithData})
