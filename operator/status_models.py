"""What the operator writes to the status of AlertPipelines and AlertRules (the CRDs' status schemas)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alertpipe.operator.autoscaling import RoleScalingStatus
from alertpipe.operator.rollout_models import CanaryStatus
from alertpipe.operator.slo_models import SLOStatus
from alertpipe.workers.config.base import Model

__all__ = [
    "AlertPipelineStatus", "AlertRuleStatus", "Condition", "RoleReplicas", "RuleCounts", "RuleLiveness",
]


class Condition(Model):
    """A Kubernetes-style status condition."""

    type: str = Field(
        description="Ready, TopicsReady, RedisReady, RulesReady, WorkersAvailable, KillSwitchActive, Valid."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field("", description="What happened, for a human.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="Generation the condition was computed for.")


class RuleCounts(Model):
    valid: int = Field(0, description="Selected rules that compiled and are live.")
    invalid: int = Field(0, description="Selected rules left out because they do not compile.")
    disabled: int = Field(0, description="Valid rules disabled by a kill switch.")


class RoleReplicas(Model):
    desired: int = Field(0, description="Replicas asked for.")
    available: int = Field(0, description="Replicas available.")


class AlertPipelineStatus(Model):
    """What the operator observed and did."""

    observed_generation: int | None = Field(None, description="Last spec generation reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="Current conditions.")
    revision: str | None = Field(None, description="Config revision in the ConfigMap.")
    config_map: str | None = Field(None, description="Name of the ConfigMap holding the config.")
    rules: RuleCounts = Field(default_factory=RuleCounts, description="Selected rules by outcome.")
    invalid_rules: list[str] = Field(default_factory=list, description="Selected rules left out.")
    topics: dict[str, str] = Field(default_factory=dict, description="Topic names by purpose.")
    replicas: dict[str, RoleReplicas] = Field(default_factory=dict, description="Replicas per role.")
    scaling: dict[str, RoleScalingStatus] = Field(
        default_factory=dict, description="Autoscaling per role: lag, rates, the last decision."
    )
    canary: CanaryStatus | None = Field(None, description="The canary rollout, while one runs or ran.")
    slo: SLOStatus | None = Field(None, description="The last SLO measurement against spec.slo.")


class RuleLiveness(Model):
    pipeline: str = Field(description="Pipeline name.")
    revision: str = Field(description="Config revision of that pipeline holding this rule.")


class AlertRuleStatus(Model):
    """Validation outcome and where the rule runs."""

    observed_generation: int | None = Field(None, description="Last spec generation validated.")
    conditions: list[Condition] = Field(default_factory=list, description="Valid condition.")
    pipelines: list[str] = Field(default_factory=list, description="Pipelines this rule feeds.")
    live: list[RuleLiveness] = Field(default_factory=list, description="Config revision per pipeline.")
