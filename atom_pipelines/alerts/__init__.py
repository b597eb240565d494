"""Analyst alerts: the ``analyst_alerts`` sensor and the ``alert_channels`` resource (see README.md here)."""

from atom_pipelines.alerts.channels import (
    AlertChannels,
    AlertConfigError,
    AlertDeliveryError,
)
from atom_pipelines.alerts.model import Alert, FailingPartition
from atom_pipelines.alerts.sensor import AlertsNotDelivered, analyst_alerts

__all__ = [
    "Alert",
    "AlertChannels",
    "AlertConfigError",
    "AlertDeliveryError",
    "AlertsNotDelivered",
    "FailingPartition",
    "analyst_alerts",
]
