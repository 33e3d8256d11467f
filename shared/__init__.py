"""Code shared by every service: serving, settings, logging, metrics, errors, audio helpers.

Services import this package and the generated stubs (package ``tts``: ``make protos``, or any build of the
project), never each other's modules.
"""
