"""Code shared by every service: serving, settings, logging, metrics, errors, audio helpers.

Services import this package and the generated stubs (``gen/``), never each other's modules.
"""
import os
import sys

# Generated stubs live in <repo>/gen (``make protos``); make them importable for every entry point.
_GEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gen")
if os.path.isdir(_GEN) and _GEN not in sys.path:
    sys.path.append(_GEN)
