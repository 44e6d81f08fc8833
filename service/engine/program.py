"""A rule's steps, compiled to a flat program: a journey's position is one integer.

Nested blocks (if/then/else, wait_for/on_event/on_timeout) become jumps, so a journey that
waits for days is stored as (rule, version, pc) and resumes exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.engine import staff_format


@dataclass(frozen=True)
class Send:
    spec: staff_format.SendSpec


@dataclass(frozen=True)
class Wait:
    spec: staff_format.WaitSpec


@dataclass(frozen=True)
class WaitFor:
    spec: staff_format.WaitForSpec
    on_timeout: int  # pc to continue at when the event does not come; pc + 1 when it does


@dataclass(frozen=True)
class If:
    condition: Any
    otherwise: int  # pc of the else block


@dataclass(frozen=True)
class Jump:
    target: int


@dataclass(frozen=True)
class Exit:
    reason: str


@dataclass(frozen=True)
class End:
    pass


Instruction = Send | Wait | WaitFor | If | Jump | Exit | End


def compile_steps(steps: list[Any]) -> list[Instruction]:
    program: list[Instruction] = []

    def placeholder() -> int:
        program.append(End())
        return len(program) - 1

    def emit(block: list[Any]) -> None:
        for step in block:
            if isinstance(step, staff_format.Send):
                program.append(Send(step.send))
            elif isinstance(step, staff_format.Wait):
                program.append(Wait(step.wait))
            elif isinstance(step, staff_format.Exit):
                program.append(Exit(step.exit))
            elif isinstance(step, staff_format.WaitFor):
                at = placeholder()
                emit(step.on_event)
                jump = placeholder()
                program[at] = WaitFor(step.wait_for, on_timeout=len(program))
                emit(step.on_timeout)
                program[jump] = Jump(len(program))
            elif isinstance(step, staff_format.Branch):
                at = placeholder()
                emit(step.then)
                jump = placeholder()
                program[at] = If(step.if_, otherwise=len(program))
                emit(step.else_)
                program[jump] = Jump(len(program))
            else:
                raise TypeError(f"not a step: {step!r}")

    emit(steps)
    program.append(End())
    return program
