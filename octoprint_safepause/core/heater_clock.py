"""The long-hold heater policy's clock: when, during one hold, the policy acts next, and what it did.

Pure: the controller calls `due` on its ticks and `step` when it is due; sequences.heater_policy says
what to send. Times are seconds since the hold began.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .sequences import HeaterStep, heater_policy


@dataclass
class HeaterClock:
    held_at: float  # time.time() when the hold began
    next_check: float | None = 0.0  # hold seconds at which the policy acts next; None: never again
    done: frozenset = field(default_factory=frozenset)  # actions taken during this hold
    heaters_off: bool = False

    def due(self, now: float) -> bool:
        return self.next_check is not None and now - self.held_at >= self.next_check

    def step(self, state, settings, flavour: str | None, now: float) -> HeaterStep:
        """What the policy does now; the clock moves on to its next action."""
        step = heater_policy(state, settings, now - self.held_at, self.done, flavour=flavour)
        self.done = step.done
        self.heaters_off = self.heaters_off or step.heaters_off
        self.next_check = step.next_check
        return step

    def action_in(self, now: float) -> float | None:
        """Seconds until the next action, or None."""
        if self.next_check is None:
            return None
        return max(0.0, self.next_check - (now - self.held_at))
