"""Model catalog, deployments (engine instances) and per-department routes.

Writes go through mgmt.routing.services (audited, and each publishes a gateway invalidation on commit).
The gateway reads these tables with plain SQL (appliance/gateway/snapshot.py): keep the two in step.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from mgmt.accounts.models import Department


class EngineKind(models.TextChoices):
    """The same values as appliance.engines.EngineKind (the adapters): one vocabulary for engines."""

    VLLM = "vllm-cuda", "vLLM (CUDA)"
    VLLM_CPU = "vllm-cpu", "vLLM (CPU)"
    DS4 = "ds4", "ds4"
    LLAMA_CPP = "llama-cpp", "llama.cpp"


class Task(models.TextChoices):
    CHAT = "chat", "Chat and completions"
    EMBEDDING = "embedding", "Embeddings"


class Thinking(models.TextChoices):
    OFF = "off", "Off"
    HIGH = "high", "High"
    MAX = "max", "Max"


# reasoning_effort "max" needs this much context (DESIGN.md, "Engines and hardware profiles").
THINKING_MAX_MIN_CONTEXT = 393216


class Model(models.Model):
    """A catalog entry: what the engines serve, under the name they serve it as."""

    name = models.SlugField(max_length=100, unique=True)
    served_name = models.CharField(max_length=200)
    task = models.CharField(max_length=16, choices=Task.choices, default=Task.CHAT)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Deployment(models.Model):
    """One engine instance serving a model at an endpoint (loopback or an inference node)."""

    name = models.SlugField(max_length=100, unique=True)
    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="deployments")
    kind = models.CharField(max_length=16, choices=EngineKind.choices)
    endpoint = models.URLField(max_length=300)
    max_context = models.PositiveIntegerField()
    # Requests in flight at once; more wait in the gateway's weighted fair queue.
    max_concurrency = models.PositiveIntegerField(default=8)
    healthy = models.BooleanField(default=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Route(models.Model):
    """department x alias -> ordered deployments.

    A department may use exactly the aliases it has routes for."""

    department = models.ForeignKey(Department, on_delete=models.CASCADE, related_name="routes")
    alias = models.SlugField(max_length=64)
    thinking = models.CharField(max_length=8, choices=Thinking.choices, default=Thinking.OFF)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["department__name", "alias"]
        constraints = [models.UniqueConstraint(fields=["department", "alias"], name="route_department_alias")]

    def __str__(self) -> str:
        return f"{self.department.slug}/{self.alias}"


class RouteTarget(models.Model):
    """One deployment of a route. Lowest `priority` is tried first; targets sharing a priority split the
    load by `weight`; higher priorities are the fallbacks, tried only before the first byte."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="targets")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="route_targets")
    priority = models.PositiveIntegerField(default=0)
    weight = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["route", "priority", "id"]
        constraints = [
            models.UniqueConstraint(fields=["route", "deployment"], name="route_target_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.route_id} -> {self.deployment_id} (priority {self.priority}, weight {self.weight})"
