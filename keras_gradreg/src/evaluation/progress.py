"""Progress of a robustness evaluation, one line per attack and radius."""

from __future__ import annotations

import time


def _duration(seconds: float) -> str:
    """`seconds` as "42s", "3:05" or "1:02:03".

    Examples:
        >>> _duration(42.4), _duration(185), _duration(3723)
        ('42s', '3:05', '1:02:03')
    """
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}:{seconds:02d}"
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


class SuiteProgress:
    """Prints, after each attack at each radius, what it did: the threat,
    the attack, how many points it attacked, how many remain robust at that
    radius (after every attack so far, so the number only falls within a
    radius), its time, and an estimate of the time left.

    The estimate charges each attack still to run its seconds per attacked
    point in its latest run (the first includes compiling, so early
    estimates run high) times the points it will at most attack (those
    still robust at its radius); it is shown once every remaining attack
    has run once.

    Args:
        points: the (norm, eps, attack) runs, in order.
        correct: per example, whether it is classified correctly when clean.
        extra_steps: further steps after the attacks (the noise tests).
    """

    def __init__(self, points, correct, extra_steps=0):
        self.points = [(norm, eps, attack.name) for norm, eps, attack in points]
        self.total = len(self.points) + extra_steps
        self.clean = int(round(correct.sum()))
        self.size = len(correct)
        self.finished = 0
        self.robust = {}  # (norm, eps) -> points still robust
        self.cost = {}  # attack name -> (seconds, attacked points), latest run
        self.current = None

    def start(self, norm, eps, name, attacked):
        self.current = (norm, eps, name, attacked, time.perf_counter())

    def done(self, robust):
        norm, eps, name, attacked, began = self.current
        seconds = time.perf_counter() - began
        if attacked or name not in self.cost:  # the latest run (compiled by then)
            self.cost[name] = (seconds, attacked)
        self.robust[(norm, eps)] = int(round(robust.sum()))
        self.finished += 1
        line = (
            f"[{self.finished}/{self.total}] {norm} eps={eps:g} {name}: attacked "
            f"{attacked}, {self.robust[(norm, eps)]}/{self.size} robust "
            f"({self.robust[(norm, eps)] / self.size:.2%}), {_duration(seconds)}"
        )
        left = self.time_left()
        if left is not None and self.finished < len(self.points):
            line += f", about {_duration(left)} left"
        print(line, flush=True)

    def time_left(self):
        """Seconds the remaining attacks should take at most, or None when
        one of them has not run yet."""
        total = 0.0
        for norm, eps, name in self.points[self.finished :]:
            if name not in self.cost:
                return None
            seconds, attacked = self.cost[name]
            if attacked:
                rate = seconds / attacked
                total += rate * self.robust.get((norm, eps), self.clean)
        return total

    def noise(self, std, clipped, accuracy):
        self.finished += 1
        clip = "clipped" if clipped else "not clipped"
        print(
            f"[{self.finished}/{self.total}] Gaussian noise std={std:g} ({clip}): "
            f"accuracy {accuracy:.2%}",
            flush=True,
        )
