"""Generate the gRPC/protobuf stubs for every protos/**/*.proto into OUT/tts/... as a regular Python package.

Used by `make protos` (OUT = the repository root, so `from tts.v1 import tts_pb2` works from a checkout) and by the
setuptools build (setup.py; OUT = the wheel's build directory, so `pip install .` ships the stubs).

    python scripts/gen_protos.py OUT
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = "tts"   # the protos' top-level package (protos/tts/...): the import name of the generated stubs


def generate(out: Path) -> list[Path]:
    """(Re)writes OUT/tts from the .proto files; returns the generated package directories."""
    from grpc_tools import protoc

    out = Path(out).resolve()
    shutil.rmtree(out / PACKAGE, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    if not sources:
        raise SystemExit(f"no .proto files under {PROTOS}")
    include = Path(protoc.__file__).parent / "_proto"          # google/protobuf/*.proto shipped with grpcio-tools
    rc = protoc.main(["grpc_tools.protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", f"--pyi_out={out}", *sources])
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc})")
    # protoc writes modules only: make every directory a regular package (setuptools finds them, no namespace magic)
    packages = sorted({p.parent for p in (out / PACKAGE).rglob("*.py")} | {out / PACKAGE})
    for pkg in packages:
        d = pkg
        while d != out:
            (d / "__init__.py").touch()
            d = d.parent
    (out / PACKAGE / "py.typed").touch()
    return packages


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/gen_protos.py", description="generate the stubs as OUT/tts/...")
    p.add_argument("out", type=Path, help="directory that receives the package tts (the checkout: .)")
    return p


if __name__ == "__main__":
    for pkg in generate(parser().parse_args().out):
        print(pkg)
