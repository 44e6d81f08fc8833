"""The lifecycle definition staff edit in rules/lifecycle.yaml."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, model_validator

from service.kit.staff_format import Duration, Strict

ROLES = ("new", "activated", "engaged", "at_risk", "churned", "recalled")


class StageNames(Strict):
    """The name shown for each stage; change the right-hand side to rename one."""

    new: str = "new"
    activated: str = "activated"
    engaged: str = "engaged"
    at_risk: str = "at_risk"
    churned: str = "churned"
    recalled: str = "recalled"


class Activation(Strict):
    event: str = Field(description="the event that marks a user as activated")


class Engagement(Strict):
    event: str = Field(description="the event that counts towards being engaged")
    at_least: int = Field(ge=1, description="how many times")
    within: Duration = Field(description="in this window")


class Lifecycle(Strict):
    stages: StageNames = Field(default_factory=StageNames)
    activation: Activation
    engagement: Engagement
    at_risk_after: Duration = Field(description="no activity for this long: at_risk")
    churned_after: Duration = Field(description="no activity for this long: churned")
    not_activity: list[str] = Field(
        default_factory=list,
        description="track events that do not count as the user being active "
        "(e.g. events your backend sends on the user's behalf)",
    )

    @model_validator(mode="after")
    def _thresholds(self) -> Lifecycle:
        if self.churned_after <= self.at_risk_after:
            raise ValueError("churned_after must be longer than at_risk_after")
        names = [getattr(self.stages, role) for role in ROLES]
        if len(set(names)) != len(names):
            raise ValueError("stages: every stage needs a different name")
        return self

    def name(self, role: str) -> str:
        name: str = getattr(self.stages, role)
        return name

    def names(self) -> list[str]:
        return [self.name(role) for role in ROLES]

    @property
    def thresholds(self) -> tuple[dt.timedelta, dt.timedelta]:
        return self.at_risk_after, self.churned_after
