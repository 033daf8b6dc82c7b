"""Incidents: the guide's response process around every run — declare, notify, escalate, update,
post-mortem."""

from agent.incidents.policy import IncidentPolicy
from agent.incidents.service import Incidents, RunOrigin, incident_target
from agent.incidents.store import Event, Incident

__all__ = ["Event", "Incident", "IncidentPolicy", "Incidents", "RunOrigin", "incident_target"]
