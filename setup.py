"""Build hook: the generated gRPC stubs (package ``tts``, from protos/) are part of every build.

``pip install .`` (a wheel) gets them generated into the build directory, so the installed ``ttsctl`` imports
``tts.v1`` like any other package; ``pip install -e .`` generates them into the checkout (as ``make protos`` does).
Everything else is declared in pyproject.toml.
"""
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class build_py_with_stubs(build_py):
    def run(self):
        super().run()
        out = HERE if self.editable_mode else Path(self.build_lib)
        subprocess.run([sys.executable, str(HERE / "scripts" / "gen_protos.py"), str(out)], check=True,
                       stdout=subprocess.DEVNULL)


setup(cmdclass={"build_py": build_py_with_stubs})
