"""Test doubles shared by the unit tests."""


class FakeClock:
    """A clock that moves only when the test says so (no sleeps): call it for the time, set or advance ``t``."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
